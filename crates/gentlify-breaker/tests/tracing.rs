//! Every transition is a `tracing` event: a warning when the breaker opens, info otherwise.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gentlify_breaker::CircuitBreakerLayer;
use gentlify_core::Feedback;
use http_body_util::Full;
use tower::{service_fn, Service, ServiceExt};
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[tokio::test(start_paused = true)]
async fn every_transition_emits_a_tracing_event() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let layer = CircuitBreakerLayer::builder()
        .feedback(Feedback::builder().name("chat").build())
        .consecutive_failures(1)
        .open_for(Duration::from_secs(1))
        .half_open_probes(1)
        .build()
        .unwrap();
    let mut svc = tower::ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|req: http::Request<u16>| async move {
            Ok::<_, std::convert::Infallible>(
                http::Response::builder()
                    .status(*req.body())
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
        }));
    for (status, wait) in [(500, 1), (200, 0)] {
        let _ = svc
            .ready()
            .await
            .unwrap()
            .call(http::Request::new(status))
            .await;
        tokio::time::advance(Duration::from_secs(wait)).await;
    }

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 3, "{log}");
    assert!(lines[0].contains("WARN") && lines[0].contains("gentlify circuit breaker opened"));
    assert!(
        lines[0].contains("handle=\"chat\"") || lines[0].contains("handle=chat"),
        "{log}"
    );
    assert!(lines[0].contains("1 consecutive failures"), "{log}");
    assert!(
        lines[1].contains("from=\"open\"") || lines[1].contains("from=open"),
        "{log}"
    );
    assert!(lines[1].contains("half_open"), "{log}");
    assert!(
        lines[2].contains("to=\"closed\"") || lines[2].contains("to=closed"),
        "{log}"
    );
}
