//! What the full-stack benches share: the request, the inner service, tower's retry policy.

use std::convert::Infallible;
use std::future::Ready;

use bytes::Bytes;
use http_body_util::Full;
use tower::retry::Policy;

pub(crate) type Request = http::Request<Bytes>;
pub(crate) type Response = http::Response<Full<Bytes>>;

pub(crate) fn request() -> Request {
    http::Request::builder()
        .method("POST")
        .uri("http://localhost/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Bytes::from_static(
            br#"{"model":"m","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#,
        ))
        .unwrap()
}

pub(crate) async fn ok(_request: Request) -> Result<Response, Infallible> {
    Ok(http::Response::new(Full::new(Bytes::from_static(
        br#"{"ok":true}"#,
    ))))
}

/// tower's retry with a policy that clones the request (as any retry must) and retries 5xx.
#[derive(Clone)]
pub(crate) struct RetryServerErrors(pub(crate) u32);

impl<E> Policy<Request, Response, E> for RetryServerErrors {
    type Future = Ready<()>;

    fn retry(&mut self, _: &mut Request, result: &mut Result<Response, E>) -> Option<Ready<()>> {
        match result {
            Ok(r) if r.status().is_server_error() && self.0 > 0 => {
                self.0 -= 1;
                Some(std::future::ready(()))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, request: &Request) -> Option<Request> {
        let mut copy = http::Request::new(request.body().clone());
        *copy.method_mut() = request.method().clone();
        *copy.uri_mut() = request.uri().clone();
        *copy.headers_mut() = request.headers().clone();
        Some(copy)
    }
}
