//! Secret headers never reach the logs, even at TRACE level, through the whole stack.

mod common;

use std::convert::Infallible;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::drain;
use gentlify::Throttle;
use http_body_util::Full;
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

const SECRETS: [(&str, &str); 3] = [
    ("authorization", "Bearer sk-SECRET-authorization-0123456789"),
    ("api-key", "SECRET-azure-api-key-0123456789"),
    ("x-api-key", "sk-ant-SECRET-x-api-key-0123456789"),
];

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn secret_headers_never_appear_in_trace_output() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let calls = Arc::new(AtomicUsize::new(0));
    let throttle = Throttle::openai()
        .name("secrets")
        .tokens_per_minute(100_000)
        .breaker(|b| b.consecutive_failures(2).minimum_calls(1))
        .build()
        .unwrap();
    let client = ServiceBuilder::new()
        .layer(throttle.clone())
        .service(service_fn({
            let calls = calls.clone();
            move |request: http::Request<String>| {
                // The upstream echoes the secrets back, as some servers do in error bodies.
                let n = calls.fetch_add(1, Ordering::SeqCst);
                let mut response = http::Response::builder();
                for (name, value) in SECRETS {
                    assert_eq!(request.headers()[name], value, "the stack passed it on");
                    response = response.header(name, value);
                }
                let response = match n {
                    0 => response.status(429).header("retry-after-ms", "100"),
                    1 => response.status(503).header("retry-after", "1"),
                    2 => response.status(500),
                    _ => response
                        .status(200)
                        .header("x-ratelimit-remaining-tokens", "99000")
                        .header("x-ratelimit-reset-tokens", "6m0s"),
                };
                async move {
                    Ok::<_, Infallible>(
                        response
                            .body(Full::new(Bytes::from_static(b"{\"error\":\"secret\"}")))
                            .unwrap(),
                    )
                }
            }
        }));

    for _ in 0..3 {
        let mut request = http::Request::post("/v1/chat/completions")
            .body(String::from("{\"max_tokens\":10}"))
            .unwrap();
        for (name, value) in SECRETS {
            request.headers_mut().insert(name, value.parse().unwrap());
        }
        match client.clone().oneshot(request).await {
            Ok(response) => drop(drain(response).await),
            Err(error) => tracing::trace!(%error, "request failed"),
        }
        // Past the breaker's open period, so the next request is a probe.
        tokio::time::sleep(Duration::from_secs(31)).await;
    }

    let output = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    // The capture works: the stack's own events are there (outcomes, backoff, the slot's end).
    assert!(output.contains("gentlify attempt outcome"), "{output}");
    assert!(output.contains("gentlify slot ended"), "{output}");
    assert!(
        calls.load(Ordering::SeqCst) >= 4,
        "{} calls\n{output}",
        calls.load(Ordering::SeqCst)
    );
    for (name, value) in SECRETS {
        assert!(
            !output.contains(value),
            "{name}'s value was logged:\n{output}"
        );
        assert!(!output.contains("SECRET"), "a secret was logged:\n{output}");
    }
}
