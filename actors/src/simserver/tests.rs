use super::wire::{derive_arguments, parse_request};
use super::*;
use agentos_runtime::llm::ToolSpec;
use limits::DEFAULT_COMPLETION_ESTIMATE;

fn calc() -> ToolSpec {
    ToolSpec {
        name: "calculator".into(),
        description: String::new(),
        parameters: json!({"type": "object", "properties": {
            "expression": {"type": "string", "maxLength": 8},
            "precise": {"type": "boolean"},
            "unit": {"enum": ["si", "imperial"]},
            "n": {"type": "integer"},
        }}),
    }
}

#[test]
fn arguments_follow_the_schema_deterministically() {
    let args = derive_arguments(&calc(), "12 * 7 + 3 and more");
    assert_eq!(
        args,
        json!({"expression": "12 * 7 +", "precise": true, "unit": "si", "n": 19})
    );
    assert_eq!(args, derive_arguments(&calc(), "12 * 7 + 3 and more"));
}

#[test]
fn requests_parse_leniently_but_reject_wrong_types() {
    let r = parse_request(
        br#"{"model":"x","messages":[{"role":"developer","content":"sys"},
        {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
        {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function",
          "function":{"name":"f","arguments":"{\"x\":1}"}}]},
        {"role":"tool","tool_call_id":"c1","content":"42"}],
        "tools":[{"type":"function","function":{"name":"f"}}],"temperature":0}"#,
    )
    .unwrap();
    assert_eq!(r.messages[0].role, Role::System);
    assert_eq!(r.messages[1].content, "ab");
    assert_eq!(r.messages[2].tool_calls[0].arguments, json!({"x": 1}));
    assert_eq!(r.messages[3].tool_call_id.as_deref(), Some("c1"));
    assert_eq!(r.tools[0].name, "f");

    for (body, needle) in [
        (&b"{"[..], "invalid request body"),
        (br#"{"messages":"hi"}"#, "invalid type"),
        (br#"{"messages":[]}"#, "must not be empty"),
        (
            br#"{"messages":[{"role":"wizard","content":"x"}]}"#,
            "messages[0].role",
        ),
        (
            br#"{"messages":[{"role":"user","content":5}]}"#,
            "messages[0].content",
        ),
        (
            br#"{"messages":[{"role":"tool","content":"x"}]}"#,
            "tool_call_id",
        ),
        (
            br#"{"messages":[{"role":"user","content":"x"}],"stream":true}"#,
            "stream",
        ),
    ] {
        let e = parse_request(body).unwrap_err();
        assert!(e.contains(needle), "{needle:?} not in {e:?}");
    }
}

fn instant() -> SimServerConfig {
    SimServerConfig::parse(
        "(latency: (base_ms: 0, per_prompt_token_us: 0, per_output_token_ms: 0))",
    )
    .unwrap()
}

fn body(v: Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

async fn json_of(resp: Reply) -> (StatusCode, Value) {
    let status = resp.status();
    assert_eq!(resp.headers()[SIMULATOR_HEADER], "true");
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn a_tool_offering_conversation_gets_one_call_then_an_answer() {
    let server = SimServer::new(instant());
    let tools = json!([{"type": "function", "function": {"name": "calculator",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}}}}]);
    let first = json!({"messages": [{"role": "user", "content": "2 + 3"}], "tools": tools});
    let (status, reply) = json_of(server.complete(0, &body(first.clone())).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply["model"], "agentos-simulator");
    assert_eq!(reply["choices"][0]["finish_reason"], "tool_calls");
    let call = &reply["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "calculator");
    assert_eq!(call["function"]["arguments"], r#"{"expression":"2 + 3"}"#);
    assert!(reply["usage"]["prompt_tokens"].as_u64().unwrap() > 0);

    let second = json!({"messages": [
        {"role": "user", "content": "2 + 3"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "5"}], "tools": tools});
    let (_, reply) = json_of(server.complete(0, &body(second)).await).await;
    assert_eq!(reply["choices"][0]["finish_reason"], "stop");
    let text = reply["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        text.starts_with("[simulated]") && text.ends_with(": 5"),
        "{text}"
    );
    assert_eq!(server.served(), 2);

    // Same conversation, same reply (ids aside: the attempt number advanced).
    let (_, again) = json_of(server.complete(0, &body(first)).await).await;
    assert_eq!(
        again["choices"][0]["message"]["tool_calls"][0]["function"],
        call["function"]
    );
}

#[tokio::test]
async fn faults_are_http_errors_and_retries_draw_afresh() {
    let mut cfg = instant();
    cfg.sim.faults.error_rate = 0.5;
    let server = SimServer::new(cfg);
    let req = body(json!({"messages": [{"role": "user", "content": "hello"}]}));
    let mut statuses = Vec::new();
    for _ in 0..40 {
        statuses.push(server.complete(0, &req).await.status());
    }
    let errors = statuses
        .iter()
        .filter(|s| **s == StatusCode::INTERNAL_SERVER_ERROR)
        .count();
    assert!((5..35).contains(&errors), "{errors} errors of 40");
    assert_eq!(errors + server.served() as usize, 40);

    let mut cfg = instant();
    cfg.rate_limit_rate = 1.0;
    let server = SimServer::new(cfg);
    let resp = server.complete(0, &req).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()[RETRY_AFTER], "1");
}

#[tokio::test]
async fn a_full_queue_answers_429_and_slots_limit_concurrency() {
    let mut cfg =
        SimServerConfig::parse("(latency: (base_ms: 200), max_concurrent: 1, max_queue: 1)")
            .unwrap();
    cfg.retry_after = Duration::from_millis(500);
    let server = SimServer::new(cfg);
    let req = body(json!({"messages": [{"role": "user", "content": "x"}]}));
    let started = Instant::now();
    let (a, b, c) = tokio::join!(
        server.complete(0, &req),
        server.complete(0, &req),
        server.complete(0, &req)
    );
    let mut statuses = vec![a.status(), b.status(), c.status()];
    statuses.sort();
    assert_eq!(
        statuses,
        vec![
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    // Two requests through one slot take two latencies.
    assert!(started.elapsed() >= Duration::from_millis(400));
    let limited = [a, b, c]
        .into_iter()
        .find(|r| r.status() == StatusCode::TOO_MANY_REQUESTS)
        .unwrap();
    assert_eq!(limited.headers()[RETRY_AFTER], "0.5");
}

/// A conversation whose system prompt spans several cache blocks.
fn long_prompt(user: &str) -> Vec<u8> {
    body(json!({"messages": [
        {"role": "system", "content": "You are a careful assistant. ".repeat(20)},
        {"role": "user", "content": user}]}))
}

fn cached(reply: &Value) -> u64 {
    reply["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn a_repeated_prompt_hits_its_replicas_cache_and_no_other() {
    let mut cfg = instant();
    cfg.replicas = 2;
    let server = SimServer::new(cfg);
    let req = long_prompt("What is 2 + 2?");

    let resp = server.complete(0, &req).await;
    assert_eq!(resp.headers()[REPLICA_HEADER], "0");
    let (_, first) = json_of(resp).await;
    let prompt = first["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(prompt > 100, "{first}");
    assert_eq!(cached(&first), 0, "a cold replica has nothing cached");

    let (_, again) = json_of(server.complete(0, &req).await).await;
    // The whole prompt is resident (at least every full block of it).
    assert!(
        cached(&again) + 16 > prompt && cached(&again) <= prompt,
        "{again}"
    );
    assert_eq!(again["usage"]["prompt_tokens"], prompt);

    let resp = server.complete(1, &req).await;
    assert_eq!(resp.headers()[REPLICA_HEADER], "1");
    let (_, other) = json_of(resp).await;
    assert_eq!(cached(&other), 0, "replica 1 has its own cache");
    // Replies do not depend on the replica.
    assert_eq!(other["choices"], first["choices"]);

    // A new question on replica 0 reuses the shared system prompt.
    let (_, shared) = json_of(server.complete(0, &long_prompt("And 3 + 3?")).await).await;
    assert!(cached(&shared) > 100, "{shared}");

    let (status, health) = json_of(server.healthz()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["served_total"], 4);
    assert_eq!(health["prefix_cache"]["tokenizer"], "o200k_base");
    let replicas = health["replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), 2);
    assert_eq!(replicas[0]["served_total"], 3);
    assert_eq!(replicas[1]["served_total"], 1);
    let r0 = &replicas[0]["cache"];
    assert_eq!(
        r0["hit_tokens"].as_u64().unwrap(),
        cached(&again) + cached(&shared)
    );
    assert_eq!(
        r0["query_tokens"].as_u64().unwrap(),
        prompt * 2 + shared["usage"]["prompt_tokens"].as_u64().unwrap()
    );
    assert!(r0["blocks"]["cached"].as_u64().unwrap() > 0, "{r0}");
    assert_eq!(r0["blocks"]["active"], 0, "no call is running");
    assert_eq!(replicas[1]["cache"]["hit_tokens"], 0);
}

#[tokio::test]
async fn without_a_cache_nothing_is_cached_and_health_says_so() {
    let mut cfg = instant();
    cfg.cache = None;
    let server = SimServer::new(cfg);
    let req = long_prompt("hi");
    for _ in 0..2 {
        let (_, reply) = json_of(server.complete(0, &req).await).await;
        assert_eq!(cached(&reply), 0);
    }
    let (_, health) = json_of(server.healthz()).await;
    assert_eq!(health["prefix_cache"], Value::Null);
    assert_eq!(health["replicas"][0]["cache"], Value::Null);
}

#[tokio::test]
async fn cache_hits_shorten_latency_and_equal_sequences_repeat_exactly() {
    let run = || async {
        let cfg = SimServerConfig::parse(
            "(replicas: 2, latency: (base_ms: 0, per_prompt_token_us: 1000, \
             per_output_token_ms: 0))",
        )
        .unwrap();
        let server = SimServer::new(cfg);
        let mut out = Vec::new();
        for (replica, user) in [(0, "a"), (0, "a"), (1, "a"), (0, "b")] {
            let started = Instant::now();
            let (_, reply) = json_of(server.complete(replica, &long_prompt(user)).await).await;
            out.push((reply["choices"].clone(), cached(&reply), started.elapsed()));
        }
        out
    };
    let (first, second) = (run().await, run().await);
    let strip = |v: &[(Value, u64, Duration)]| {
        v.iter()
            .map(|(c, n, _)| (c.clone(), *n))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&first), strip(&second));
    // The cold call prefills every token (>100 tokens at 1 ms); the warm one at most a block.
    assert!(first[0].2 >= Duration::from_millis(100), "{:?}", first[0].2);
    assert!(first[1].2 < first[0].2, "{first:?}");
}

/// An instant server with these rate limits (RON fields), over a window long enough that
/// refill during a test is below one token or request.
fn limited(fields: &str) -> Arc<SimServer> {
    let cfg = SimServerConfig::parse(&format!(
        "(latency: (base_ms: 0, per_prompt_token_us: 0, per_output_token_ms: 0), {fields})"
    ))
    .unwrap();
    SimServer::new(cfg)
}

fn header(resp: &Reply, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

fn number(resp: &Reply, name: &str) -> u64 {
    header(resp, name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .parse()
        .unwrap()
}

fn usage_total(reply: &Value) -> u64 {
    reply["usage"]["prompt_tokens"].as_u64().unwrap()
        + reply["usage"]["completion_tokens"].as_u64().unwrap()
}

#[tokio::test]
async fn a_burst_over_the_request_limit_gets_429s_with_retry_after_and_headers() {
    let server = limited("requests_per_window: 3, limit_window_secs: 60");
    let req = body(json!({"messages": [{"role": "user", "content": "hello"}]}));
    let (a, b, c, d, e) = tokio::join!(
        server.complete(0, &req),
        server.complete(0, &req),
        server.complete(0, &req),
        server.complete(0, &req),
        server.complete(0, &req)
    );
    let replies = [a, b, c, d, e];
    let ok: Vec<_> = replies
        .iter()
        .filter(|r| r.status() == StatusCode::OK)
        .collect();
    assert_eq!(ok.len(), 3);
    let mut remaining: Vec<u64> = ok
        .iter()
        .map(|r| number(r, "x-ratelimit-remaining-requests"))
        .collect();
    remaining.sort();
    assert_eq!(remaining, [0, 1, 2]);
    for r in &ok {
        assert_eq!(number(r, "x-ratelimit-limit-requests"), 3);
        assert!(header(r, "x-ratelimit-reset-requests").is_some());
        assert_eq!(
            header(r, "x-ratelimit-limit-tokens"),
            None,
            "no token limit"
        );
    }
    let mut tokens = 0;
    for resp in replies {
        if resp.status() == StatusCode::OK {
            tokens += usage_total(&json_of(resp).await.1);
            continue;
        }
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        // One request of 3 per minute comes back in 20 s.
        assert_eq!(header(&resp, "retry-after").as_deref(), Some("20"));
        assert_eq!(number(&resp, "x-ratelimit-limit-requests"), 3);
        assert_eq!(number(&resp, "x-ratelimit-remaining-requests"), 0);
        let reset = header(&resp, "x-ratelimit-reset-requests").unwrap();
        let reset = agentos_runtime::llm::ratelimit::parse_reset(&reset).unwrap();
        assert!(reset > Duration::from_secs(59), "{reset:?}");
        let (_, body) = json_of(resp).await;
        assert_eq!(body["error"]["type"], "requests");
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("Rate limit reached for requests on agentos-simulator per 1m0s"),
            "{message}"
        );
    }
    assert_eq!(
        server.served(),
        3,
        "nothing generated for a refused request"
    );
    let (_, health) = json_of(server.healthz()).await;
    assert_eq!(
        health["rate_limits"],
        json!({
            "limit_window_ms": 60_000,
            "tokens_per_window": null,
            "requests_per_window": 3,
            "accepted_requests": 3,
            "limited_requests": 2,
            "accepted_tokens": tokens,
            "max_window_tokens": tokens,
            "max_window_requests": 3,
        })
    );
}

#[tokio::test]
async fn remaining_tokens_drop_by_prompt_and_max_tokens_and_the_unused_part_comes_back() {
    for cache in ["", "cache: None,"] {
        let server = limited(&format!(
            "{cache} tokens_per_window: 10000, limit_window_secs: 86400"
        ));
        let ask = |user: &str, max_tokens: Option<u32>| {
            let mut v = json!({"messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": user}]});
            if let Some(m) = max_tokens {
                v["max_completion_tokens"] = json!(m);
            }
            body(v)
        };
        let first = server.complete(0, &ask("What is 2 + 2?", Some(500))).await;
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(number(&first, "x-ratelimit-limit-tokens"), 10_000);
        let remaining_first = number(&first, "x-ratelimit-remaining-tokens");
        let reset = header(&first, "x-ratelimit-reset-tokens").unwrap();
        let (_, reply) = json_of(first).await;
        let prompt = reply["usage"]["prompt_tokens"].as_u64().unwrap();
        let completion = reply["usage"]["completion_tokens"].as_u64().unwrap();
        assert!(completion < 500, "{reply}");
        // Charged at arrival: the prompt as the reply counts it, plus max_tokens.
        assert_eq!(remaining_first, 10_000 - prompt - 500, "cache {cache:?}");
        // 10,000 tokens a day refill (prompt + 500) in that many 8.64 s.
        let expected = Duration::from_millis((prompt + 500) * 8_640);
        assert_eq!(
            agentos_runtime::llm::ratelimit::parse_reset(&reset),
            Some(expected),
            "{reset}"
        );

        // The unused part of max_tokens came back; the next request has no max_tokens and is
        // charged the default estimate.
        let second = server.complete(0, &ask("And 3 + 3?", None)).await;
        let remaining_second = number(&second, "x-ratelimit-remaining-tokens");
        let (_, reply2) = json_of(second).await;
        let prompt2 = reply2["usage"]["prompt_tokens"].as_u64().unwrap();
        assert_eq!(
            remaining_second,
            10_000 - (prompt + completion) - (prompt2 + DEFAULT_COMPLETION_ESTIMATE),
            "cache {cache:?}"
        );
        let (_, health) = json_of(server.healthz()).await;
        let limits = &health["rate_limits"];
        assert_eq!(
            limits["accepted_tokens"],
            usage_total(&reply) + usage_total(&reply2)
        );
        assert_eq!(limits["max_window_tokens"], limits["accepted_tokens"]);
        assert_eq!(limits["tokens_per_window"], 10_000);
        assert_eq!(limits["limited_requests"], 0);
    }
}

#[tokio::test]
async fn a_request_over_the_token_limit_is_refused_and_a_failed_one_gives_its_tokens_back() {
    let server = limited("tokens_per_window: 1000, limit_window_secs: 86400");
    let ask = |max_tokens: u32| {
        body(json!({"messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": max_tokens}))
    };
    let big = body(
        json!({"messages": [{"role": "user", "content": "word ".repeat(600)}],
                          "max_tokens": 100}),
    );
    let resp = server.complete(0, &big).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let (_, reply) = json_of(resp).await;
    let used = usage_total(&reply);
    assert!((600..900).contains(&used), "{reply}");
    let resp = server.complete(0, &ask(500)).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    // About 400 tokens missing at 1,000 a day: hours.
    assert!(number(&resp, "retry-after") > 3_600);
    assert_eq!(number(&resp, "x-ratelimit-remaining-tokens"), 1_000 - used);
    let (_, refused) = json_of(resp).await;
    assert_eq!(refused["error"]["type"], "tokens");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Rate limit reached for tokens"),
        "{message}"
    );

    let resp = server.complete(0, &ask(5_000)).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(number(&resp, "retry-after"), 86_400);
    let (_, too_large) = json_of(resp).await;
    let message = too_large["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("Request too large"), "{message}");

    // A simulated server error generates nothing: its charge comes back whole.
    let mut cfg = server.config().clone();
    cfg.sim.faults.error_rate = 1.0;
    let failing = SimServer::new(cfg);
    let resp = failing.complete(0, &ask(400)).await;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        number(&resp, "x-ratelimit-remaining-tokens") < 600,
        "charged at arrival"
    );
    let after = failing.limits.peek(Instant::now()).tokens.unwrap();
    assert_eq!(after.remaining, 1_000);
    let (_, health) = json_of(failing.healthz()).await;
    assert_eq!(health["rate_limits"]["accepted_requests"], 1);
    assert_eq!(health["rate_limits"]["accepted_tokens"], 0);
}

#[tokio::test]
async fn simulated_429s_charge_nothing_and_are_not_counted_as_limited() {
    let mut cfg = limited("tokens_per_window: 1000, requests_per_window: 5")
        .cfg
        .clone();
    cfg.rate_limit_rate = 1.0;
    let server = SimServer::new(cfg);
    let req = body(json!({"messages": [{"role": "user", "content": "x"}]}));
    let resp = server.complete(0, &req).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(number(&resp, "x-ratelimit-remaining-requests"), 5);
    assert_eq!(number(&resp, "x-ratelimit-remaining-tokens"), 1_000);
    let (_, health) = json_of(server.healthz()).await;
    assert_eq!(health["rate_limits"]["limited_requests"], 0);
    assert_eq!(health["rate_limits"]["accepted_requests"], 0);
}

#[tokio::test]
async fn replies_stop_at_max_tokens() {
    let server = SimServer::new(instant());
    let long = "word ".repeat(200);
    let req = body(json!({"messages": [{"role": "user", "content": long}], "max_tokens": 5}));
    let (_, reply) = json_of(server.complete(0, &req).await).await;
    assert_eq!(reply["choices"][0]["finish_reason"], "length");
    assert_eq!(reply["usage"]["completion_tokens"], 5);
    let text = reply["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(approx_tokens(text) <= 5, "{text}");
    assert!(text.starts_with("[sim"), "{text}");

    let tools = json!([{"type": "function", "function": {"name": "calculator",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}}}}]);
    let req = body(
        json!({"messages": [{"role": "user", "content": long}], "tools": tools,
                          "max_tokens": 8}),
    );
    let (_, reply) = json_of(server.complete(0, &req).await).await;
    assert_eq!(reply["choices"][0]["finish_reason"], "length");
    assert_eq!(reply["usage"]["completion_tokens"], 8);
    let call = &reply["choices"][0]["message"]["tool_calls"][0]["function"];
    assert_eq!(call["name"], "calculator");
    let raw = call["arguments"].as_str().unwrap();
    assert!(raw.starts_with("{\"expression\":\"word"), "{raw}");
    assert!(
        serde_json::from_str::<Value>(raw).is_err(),
        "cut off: {raw}"
    );

    // Within the limit, nothing changes.
    let req = body(json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 500}));
    let (_, reply) = json_of(server.complete(0, &req).await).await;
    assert_eq!(reply["choices"][0]["finish_reason"], "stop");
}
