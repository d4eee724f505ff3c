//! The loopback HTTP server answers a real hyper client like the in-process API.

use gentlify_sim::{chat_request, serve, Scenario};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

fn fast_scenario() -> Scenario {
    // Millisecond latencies: the server runs on the wall clock here.
    Scenario::from_toml(
        r#"
name = "http"
requests = 1
[workload]
kind = "closed"
workers = 1
[sizes]
prompt_tokens = { dist = "fixed", value = 10 }
output_tokens = { dist = "fixed", value = 10 }
stream = true
[latency]
ttft_ms = 1
per_token_ms = 0.1
[limits]
concurrency = 10
requests_per_minute = 60
burst_seconds = 2.0
headers = "openai"
headers_on_success = true
"#,
    )
    .unwrap()
}

#[tokio::test]
async fn loopback_server_answers_a_hyper_client_with_rate_limit_headers() {
    let (addr, server) = serve("127.0.0.1:0".parse().unwrap(), fast_scenario())
        .await
        .unwrap();
    assert!(addr.ip().is_loopback());
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);

    let mut statuses = Vec::new();
    for stream in [false, true, false] {
        let req = chat_request(10, 10, stream).map(|b| Full::new(bytes::Bytes::from(b)));
        let resp = sender.send_request(req).await.unwrap();
        statuses.push(resp.status().as_u16());
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert_eq!(headers["x-ratelimit-limit-requests"], "60");
        match statuses.len() {
            1 => {
                assert_eq!(headers["content-type"], "application/json");
                assert!(text.contains("\"total_tokens\":20"), "{text}");
            }
            2 => {
                assert_eq!(headers["content-type"], "text/event-stream");
                assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
            }
            _ => {
                assert!(headers.contains_key("retry-after"));
                assert!(headers.contains_key("retry-after-ms"));
                assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
            }
        }
    }
    assert_eq!(statuses, [200, 200, 429]);
    drop(sender);
    let _ = conn.await;
    server.abort();
}

#[tokio::test]
async fn serve_refuses_non_loopback_addresses() {
    let err = serve("0.0.0.0:0".parse().unwrap(), fast_scenario())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}
