//! Per-endpoint groups, budgets shared between stacks, hierarchical limits.

mod common;

use std::convert::Infallible;
use std::time::Duration;

use common::{drain, id_and_attempt, request, response, Seen};
use gentlify::core::error::{BudgetWaitTooLong, CircuitOpen};
use gentlify::core::Dimension;
use gentlify::{Limit, Throttle, ThrottleGroup, TokenBudget};
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};

fn requests_per_minute(n: u64) -> TokenBudget {
    TokenBudget::builder()
        .limit(Limit::requests_per_minute(n))
        .safety_ratio(1.0)
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap()
}

fn on(path: &str, id: &str) -> http::Request<String> {
    let mut request = request(id);
    *request.uri_mut() = path.parse().unwrap();
    request
}

fn slow_ok(
    seen: Seen,
) -> impl Service<
    http::Request<String>,
    Response = common::Response,
    Error = Infallible,
    Future = impl Send,
> + Clone
       + Send
       + 'static {
    service_fn(move |request: http::Request<String>| {
        seen.push(id_and_attempt(&request).0);
        async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            common::ok()
        }
    })
}

#[tokio::test(start_paused = true)]
async fn each_key_has_its_own_limit_and_all_share_the_global_budget() {
    let seen = Seen::default();
    let global = requests_per_minute(3);
    let group = ThrottleGroup::builder(|_path: &String| {
        Throttle::new().concurrency(|c| c.initial(1).min(1).max(1))
    })
    .global_budget(global.clone())
    .build()
    .unwrap();
    let client = ServiceBuilder::new()
        .layer(group.layer(|r: &http::Request<String>| r.uri().path().to_owned()))
        .service(slow_ok(seen.clone()));

    // One request per key runs at once: each key's limit of 1 does not hold the other back.
    let chat = tokio::spawn(client.clone().oneshot(on("/chat", "c1")));
    let embeddings = tokio::spawn(client.clone().oneshot(on("/embeddings", "e1")));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(seen.len(), 2, "both keys are in flight together");
    drain(chat.await.unwrap().unwrap()).await;
    drain(embeddings.await.unwrap().unwrap()).await;
    assert_eq!(group.len(), 2);

    // The third request uses the last of the global minute; the fourth would wait too long.
    drain(client.clone().oneshot(on("/chat", "c2")).await.unwrap()).await;
    let error = client
        .clone()
        .oneshot(on("/embeddings", "e2"))
        .await
        .unwrap_err();
    assert!(error.is::<BudgetWaitTooLong>(), "{error}");
    assert_eq!(global.remaining(Dimension::Requests), Some(0));
    assert_eq!(seen.list(), ["c1", "e1", "c2"]);
}

#[tokio::test(start_paused = true)]
async fn a_group_holds_at_most_max_keys_stacks() {
    let group = ThrottleGroup::builder(|_user: &u32| Throttle::new())
        .max_keys(2)
        .build()
        .unwrap();
    let first = group.get(&1).unwrap();
    group.get(&2).unwrap();
    assert!(
        group.get(&1).unwrap().feedback().same_as(first.feedback()),
        "kept"
    );
    group.get(&3).unwrap();
    assert_eq!(group.len(), 2);
    // 2 was the least recently used: it went, and comes back as a new stack.
    assert!(group.get(&1).unwrap().feedback().same_as(first.feedback()));
    for user in 4..100 {
        group.get(&user).unwrap();
    }
    assert_eq!(group.len(), 2);
    assert!(ThrottleGroup::builder(|_: &u32| Throttle::new())
        .max_keys(0)
        .build()
        .is_err());
}

#[tokio::test(start_paused = true)]
async fn failures_on_one_key_open_the_breaker_for_every_key() {
    let group = ThrottleGroup::builder(|_path: &String| Throttle::new().no_retry())
        // Refused at once (a group's breaker waits while open by default).
        .breaker(|b| b.consecutive_failures(2).minimum_calls(100).fail_fast())
        .build()
        .unwrap();
    let client = ServiceBuilder::new()
        .layer(group.layer(|r: &http::Request<String>| r.uri().path().to_owned()))
        .service(service_fn(|request: http::Request<String>| async move {
            Ok::<_, Infallible>(if request.uri().path() == "/broken" {
                response(500, "boom")
            } else {
                response(200, "ok")
            })
        }));

    for _ in 0..2 {
        let response = client.clone().oneshot(on("/broken", "b")).await.unwrap();
        assert_eq!(response.status(), 500);
        drain(response).await;
    }
    let error = client.clone().oneshot(on("/fine", "f")).await.unwrap_err();
    assert!(error.is::<CircuitOpen>(), "{error}");
}

#[tokio::test(start_paused = true)]
async fn two_stacks_built_apart_share_one_budget() {
    let shared = requests_per_minute(2);
    let chat = Throttle::new()
        .shared_budget(shared.clone())
        .build()
        .unwrap();
    let embeddings = Throttle::new()
        .shared_budget(shared.clone())
        .build()
        .unwrap();
    assert!(!chat.feedback().same_as(embeddings.feedback()));
    let seen = Seen::default();
    let chat = ServiceBuilder::new()
        .layer(chat)
        .service(slow_ok(seen.clone()));
    let embeddings = ServiceBuilder::new()
        .layer(embeddings)
        .service(slow_ok(seen.clone()));

    drain(chat.clone().oneshot(request("c1")).await.unwrap()).await;
    drain(embeddings.clone().oneshot(request("e1")).await.unwrap()).await;
    let error = chat.oneshot(request("c2")).await.unwrap_err();
    assert!(error.is::<BudgetWaitTooLong>(), "{error}");
    assert_eq!(seen.list(), ["c1", "e1"]);
}

/// provider → model → user: a group keyed by (model, user); each user has a concurrency limit of
/// its own, each model a budget shared by its users, the provider a budget shared by all.
#[tokio::test(start_paused = true)]
async fn provider_model_and_user_limits_nest() {
    let provider = requests_per_minute(5);
    let small = requests_per_minute(2);
    let large = requests_per_minute(10);
    let group = ThrottleGroup::builder({
        let (small, large) = (small.clone(), large.clone());
        move |(model, _user): &(String, String)| {
            let model_budget = if model == "small" { &small } else { &large };
            Throttle::new()
                .concurrency(|c| c.initial(1).min(1).max(1))
                .shared_budget(model_budget.clone())
        }
    })
    .global_budget(provider.clone())
    .build()
    .unwrap();
    let seen = Seen::default();
    let client = ServiceBuilder::new()
        .layer(group.layer(|r: &http::Request<String>| {
            let header = |name| r.headers()[name].to_str().unwrap().to_owned();
            (header("x-model"), header("x-user"))
        }))
        .service(slow_ok(seen.clone()));
    let call = |model: &str, user: &str| {
        let mut request = request(&format!("{model}/{user}"));
        request
            .headers_mut()
            .insert("x-model", model.parse().unwrap());
        request
            .headers_mut()
            .insert("x-user", user.parse().unwrap());
        let client = client.clone();
        async move {
            match client.oneshot(request).await {
                Ok(response) => !drain(response).await.is_empty(),
                Err(error) if error.is::<BudgetWaitTooLong>() => false,
                Err(error) => panic!("{error}"),
            }
        }
    };

    // The user level: one user's two requests go one at a time.
    let start = tokio::time::Instant::now();
    let (a, b) = tokio::join!(call("small", "u1"), call("small", "u1"));
    assert!(a && b);
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(2),
        "1 s each, one after the other"
    );
    // The model level: "small" has had its 2 per minute, whoever asks.
    assert!(!call("small", "u2").await);
    // The provider level: "large" has room for 10, the provider for 3 more.
    for user in ["u1", "u2", "u3"] {
        assert!(call("large", user).await);
    }
    assert!(!call("large", "u4").await, "the provider's minute is spent");
    assert_eq!(provider.remaining(Dimension::Requests), Some(0));
    assert_eq!(small.remaining(Dimension::Requests), Some(0));
    assert_eq!(large.remaining(Dimension::Requests), Some(7));
    assert_eq!(
        group.len(),
        6,
        "(small, u1), (small, u2), (large, u1) ... (large, u4)"
    );
    assert_eq!(seen.len(), 5);
}
