//! Classification: every row of DESIGN.md's HTTP table, gRPC in headers and trailers, server
//! delays in every form, reqwest responses.

use std::time::{Duration, SystemTime};

use gentlify_core::{
    fatal_reason, retry_after, should_retry, Class, Classified, Classify, DefaultClassifier,
    FatalReason, GrpcClassifier, HttpClassifier, MAX_SERVER_DELAY,
};
use http::HeaderMap;

fn resp(status: u16, headers: &[(&str, &str)]) -> http::Response<()> {
    let mut b = http::Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap()
}

fn class(status: u16, headers: &[(&str, &str)]) -> Class {
    match DefaultClassifier.classify_response(&resp(status, headers)) {
        Classified::Ready(c) => c,
        Classified::AtEndOfStream => panic!("http responses are classified from the head"),
    }
}

fn overloaded(ms: Option<u64>) -> Class {
    Class::Overloaded {
        retry_after: ms.map(Duration::from_millis),
    }
}

#[test]
fn successes_are_2xx_3xx_and_the_other_4xx() {
    for status in [200, 201, 204, 301, 304, 400, 401, 403, 404, 409, 413, 422] {
        assert_eq!(class(status, &[]), Class::Success, "{status}");
    }
}

#[test]
fn overloaded_is_429_503_529_with_the_servers_delay() {
    assert_eq!(class(429, &[]), overloaded(None));
    assert_eq!(class(503, &[("retry-after", "6")]), overloaded(Some(6000)));
    assert_eq!(
        class(529, &[("retry-after-ms", "1500.5")]),
        Class::Overloaded {
            retry_after: Some(Duration::from_micros(1_500_500))
        }
    );
}

#[test]
fn failures_are_500_502_504_408_and_other_5xx() {
    for status in [500, 502, 504, 408, 501, 599] {
        assert_eq!(class(status, &[]), Class::Failure, "{status}");
    }
}

#[test]
fn errors_are_failures_by_default() {
    let err = std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
    assert_eq!(DefaultClassifier.classify_error(&err), Class::Failure);
}

#[test]
fn a_429_that_can_never_succeed_is_fatal_from_its_body() {
    let r = resp(429, &[]);
    assert!(HttpClassifier.wants_body(&r));
    assert!(!HttpClassifier.wants_body(&resp(500, &[])));
    let cases: &[(&[u8], Option<FatalReason>)] = &[
        (
            br#"{"error":{"code":"insufficient_quota","type":"insufficient_quota"}}"#,
            Some(FatalReason::InsufficientQuota),
        ),
        (
            br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":null}}"#,
            Some(FatalReason::InsufficientQuota),
        ),
        (
            br#"{"error":{"code":"credit_balance_exhausted"}}"#,
            Some(FatalReason::CreditBalanceExhausted),
        ),
        (
            br#"{"type":"error","error":{"type":"rate_limit_error","message":"enforced_spend_limit_reached"}}"#,
            Some(FatalReason::SpendLimitReached),
        ),
        (
            br#"{"error":{"code":"rate_limit_exceeded","message":"Request too large for gpt-4o on tokens per min (TPM): Limit 30000, Requested 50000."}}"#,
            Some(FatalReason::RequestTooLarge),
        ),
        (
            br#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"violations":[{"quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]}]}}"#,
            Some(FatalReason::DailyQuotaExhausted),
        ),
        (
            br#"{"error":{"code":"rate_limit_exceeded","message":"Rate limit reached for requests"}}"#,
            None,
        ),
        (b"", None),
    ];
    for (body, expected) in cases {
        assert_eq!(
            fatal_reason(body),
            *expected,
            "{}",
            String::from_utf8_lossy(body)
        );
        let expected_class = expected.map(|_| Class::Fatal);
        assert_eq!(HttpClassifier.classify_body(&r, body), expected_class);
    }
    // A 500 body never turns fatal.
    assert_eq!(
        HttpClassifier.classify_body(&resp(500, &[]), b"insufficient_quota"),
        None
    );
}

#[test]
fn grpc_status_in_headers_of_a_trailers_only_response() {
    let grpc = |code: &str| {
        resp(
            200,
            &[("content-type", "application/grpc"), ("grpc-status", code)],
        )
    };
    assert_eq!(
        DefaultClassifier.classify_response(&grpc("0")),
        Classified::Ready(Class::Success)
    );
    assert_eq!(
        DefaultClassifier.classify_response(&grpc("8")),
        Classified::Ready(overloaded(None))
    );
    assert_eq!(
        DefaultClassifier.classify_response(&grpc("14")),
        Classified::Ready(Class::Failure)
    );
    assert_eq!(
        DefaultClassifier.classify_response(&grpc("4")),
        Classified::Ready(Class::Failure)
    );
    assert_eq!(
        DefaultClassifier.classify_response(&grpc("5")),
        Classified::Ready(Class::Success),
        "NOT_FOUND is the caller's business"
    );
}

#[test]
fn grpc_status_in_trailers_is_classified_at_end_of_stream() {
    let head = resp(200, &[("content-type", "application/grpc+proto")]);
    assert_eq!(
        DefaultClassifier.classify_response(&head),
        Classified::AtEndOfStream
    );
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "8".parse().unwrap());
    trailers.insert("grpc-retry-pushback-ms", "1200".parse().unwrap());
    assert_eq!(
        GrpcClassifier.classify_trailers(Some(&trailers)),
        overloaded(Some(1200))
    );
    trailers.insert("grpc-status", "0".parse().unwrap());
    assert_eq!(
        GrpcClassifier.classify_trailers(Some(&trailers)),
        Class::Success
    );
    assert_eq!(GrpcClassifier.classify_trailers(None), Class::Failure);
    // A gRPC call answered with an HTTP error follows the HTTP table.
    let http_err = resp(503, &[("content-type", "application/grpc")]);
    assert_eq!(
        GrpcClassifier.classify_response(&http_err),
        Classified::Ready(overloaded(None))
    );
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    h
}

#[test]
fn server_delays_in_every_form() {
    let ms = |v| Some(Duration::from_millis(v));
    assert_eq!(
        retry_after(&headers(&[("retry-after", "120")])),
        ms(120_000)
    );
    assert_eq!(retry_after(&headers(&[("retry-after", "1.5")])), ms(1500));
    assert_eq!(retry_after(&headers(&[("retry-after-ms", "20")])), ms(20));
    assert_eq!(
        retry_after(&headers(&[
            ("retry-after", "2"),
            ("retry-after-ms", "1500")
        ])),
        ms(1500),
        "retry-after-ms is preferred"
    );
    assert_eq!(
        retry_after(&headers(&[("grpc-retry-pushback-ms", "300")])),
        ms(300)
    );
    let in_ten = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(10));
    let d = retry_after(&headers(&[("retry-after", in_ten.as_str())])).unwrap();
    assert!(
        d > Duration::from_secs(8) && d <= Duration::from_secs(10),
        "{d:?}"
    );
    assert_eq!(
        retry_after(&headers(&[(
            "retry-after",
            "Fri, 31 Dec 1999 23:59:59 GMT"
        )])),
        Some(Duration::ZERO),
        "a date in the past is no delay"
    );
}

#[test]
fn hostile_server_delays_are_ignored_or_clamped() {
    for bad in ["-1", "NaN", "inf", "", "soon", "1e400", "-0.5", "0x10"] {
        assert_eq!(
            retry_after(&headers(&[("retry-after", bad)])),
            None,
            "{bad}"
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after-ms", bad)])),
            None,
            "{bad}"
        );
    }
    assert_eq!(
        retry_after(&headers(&[("retry-after", "99999999999999999999")])),
        Some(MAX_SERVER_DELAY)
    );
    assert_eq!(
        retry_after(&headers(&[("grpc-retry-pushback-ms", "-5")])),
        None
    );
    let mut h = HeaderMap::new();
    h.insert(
        "retry-after",
        http::HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
    );
    assert_eq!(retry_after(&h), None);
}

#[test]
fn the_servers_word_on_retrying() {
    assert_eq!(
        should_retry(&headers(&[("x-should-retry", "false")])),
        Some(false)
    );
    assert_eq!(
        should_retry(&headers(&[("x-should-retry", "true")])),
        Some(true)
    );
    assert_eq!(should_retry(&headers(&[])), None);
    assert_eq!(
        should_retry(&headers(&[("grpc-retry-pushback-ms", "-1")])),
        Some(false)
    );
    assert_eq!(
        should_retry(&headers(&[("grpc-retry-pushback-ms", "junk")])),
        Some(false)
    );
    assert_eq!(
        should_retry(&headers(&[("grpc-retry-pushback-ms", "10")])),
        None
    );
}

#[cfg(feature = "reqwest")]
#[test]
fn reqwest_responses_are_classified_like_http_ones() {
    let make = |status: u16, retry: Option<&str>| {
        let mut b = http::Response::builder().status(status);
        if let Some(r) = retry {
            b = b.header("retry-after", r);
        }
        reqwest::Response::from(b.body("").unwrap())
    };
    let c = |r: &reqwest::Response| DefaultClassifier.classify_response(r);
    assert_eq!(c(&make(200, None)), Classified::Ready(Class::Success));
    assert_eq!(
        c(&make(429, Some("3"))),
        Classified::Ready(overloaded(Some(3000)))
    );
    assert_eq!(c(&make(502, None)), Classified::Ready(Class::Failure));
    assert!(DefaultClassifier.wants_body(&make(429, None)));
}

#[test]
fn an_http_date_is_a_delay_from_the_given_wall_clock() {
    // 1999-12-31 23:46:40 UTC
    let then = SystemTime::UNIX_EPOCH + Duration::from_secs(946_684_000);
    assert_eq!(
        gentlify_core::parse_retry_after_at("Fri, 31 Dec 1999 23:59:59 GMT", then),
        Some(Duration::from_secs(799))
    );
    assert_eq!(
        gentlify_core::parse_retry_after_at(
            "Fri, 31 Dec 1999 23:59:59 GMT",
            then + Duration::from_secs(3600)
        ),
        Some(Duration::ZERO)
    );
}

/// What a layer that does not read bodies may publish from the head: the classifier's
/// `classify_response` and `wants_body` together.
fn head_class_the_long_way(
    classifier: &dyn Classify,
    response: &http::Response<()>,
) -> Option<Class> {
    match classifier.classify_response(response) {
        Classified::Ready(class) if !classifier.wants_body(response) => Some(class),
        _ => None,
    }
}

/// Heads of every kind the default classifier tells apart.
fn heads() -> Vec<http::Response<()>> {
    const GRPC: (&str, &str) = ("content-type", "application/grpc");
    let mut heads = Vec::new();
    for status in [
        200, 201, 204, 301, 404, 408, 409, 429, 500, 502, 503, 504, 529, 599,
    ] {
        heads.push(resp(status, &[]));
        heads.push(resp(status, &[("content-type", "application/json")]));
        heads.push(resp(
            status,
            &[("retry-after", "2"), ("x-request-id", "abc")],
        ));
        heads.push(resp(status, &[GRPC]));
        heads.push(resp(status, &[GRPC, ("grpc-status", "0")]));
        heads.push(resp(
            status,
            &[
                GRPC,
                ("grpc-status", "8"),
                ("grpc-retry-pushback-ms", "250"),
            ],
        ));
        heads.push(resp(
            status,
            &[
                ("content-type", "application/grpc+proto"),
                ("grpc-status", "14"),
            ],
        ));
    }
    heads
}

#[test]
fn classify_head_says_what_the_default_classifier_says_from_a_head() {
    // The default handle, and one given the default by name, take a path of their own.
    for feedback in [
        gentlify_core::Feedback::new(),
        gentlify_core::Feedback::builder()
            .classifier(DefaultClassifier)
            .build(),
    ] {
        for head in heads() {
            assert_eq!(
                feedback.classify_head(&head),
                head_class_the_long_way(&DefaultClassifier, &head),
                "{:?} {:?}",
                head.status(),
                head.headers()
            );
        }
    }
    assert_eq!(
        gentlify_core::Feedback::new().classify_head(&resp(200, &[])),
        Some(Class::Success)
    );
    assert_eq!(
        gentlify_core::Feedback::new().classify_head(&resp(429, &[])),
        None
    );
    let grpc_stream = resp(200, &[("content-type", "application/grpc")]);
    assert_eq!(
        gentlify_core::Feedback::new().classify_head(&grpc_stream),
        None
    );
}

#[test]
fn classify_head_asks_a_custom_classifier() {
    /// Everything is overloaded, and the body of a 200 is wanted.
    struct Contrary;
    impl Classify for Contrary {
        fn classify_response(&self, _: &dyn gentlify_core::ResponseParts) -> Classified {
            Classified::Ready(Class::Overloaded { retry_after: None })
        }
        fn wants_body(&self, response: &dyn gentlify_core::ResponseParts) -> bool {
            response.status() == http::StatusCode::OK
        }
    }
    let feedback = gentlify_core::Feedback::builder()
        .classifier(Contrary)
        .build();
    for head in heads() {
        assert_eq!(
            feedback.classify_head(&head),
            head_class_the_long_way(&Contrary, &head)
        );
    }
    assert_eq!(feedback.classify_head(&resp(200, &[])), None);
    assert_eq!(
        feedback.classify_head(&resp(204, &[])),
        Some(overloaded(None))
    );
    // A custom classifier replaced by the default again is the default.
    let feedback = gentlify_core::Feedback::builder()
        .classifier(Contrary)
        .classifier(DefaultClassifier)
        .build();
    assert_eq!(
        feedback.classify_head(&resp(204, &[])),
        Some(Class::Success)
    );
}
