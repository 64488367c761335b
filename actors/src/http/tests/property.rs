//! Random requests at [`handle`]: whatever the method, path, headers and body, it answers
//! with a status from a small sane set, and never panics.

use hyper::header::{HeaderName, HeaderValue};
use hyper::Method;
use proptest::prelude::*;

use super::{fixture, path_of, GOOD};
use crate::http::{handle, ApiRequest, ROUTES};

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "DELETE", "PUT", "PATCH", "OPTIONS", "TRACE", "BREW",
];

const SANE: &[u16] = &[200, 201, 400, 401, 404, 405, 409, 413, 415, 422, 503];

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_owned()),
        Just("fix".to_owned()),
        "[a-z0-9_-]{1,12}",
        "(%[0-9A-Fa-f]{2}|%|[a-z]|/|\\.){0,20}",
        ".{0,40}",
        "x{120,140}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        (0..ROUTES.len(), segment()).prop_map(|(i, s)| path_of(ROUTES[i].template, &s)),
        (0..ROUTES.len()).prop_map(|i| ROUTES[i].template.to_owned()),
        "/api/[a-z/{}]{0,30}",
        ".{0,60}",
    ]
}

fn query() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        "(workflow|task|agent|last_event_id|run|since|limit|x)=[a-z0-9%+/]{0,10}(&(workflow|task|agent|last_event_id|run|since|limit)=[a-z0-9%]{0,8}){0,3}",
        ".{0,40}",
    ])
}

fn header() -> impl Strategy<Value = (String, Vec<u8>)> {
    let name = prop_oneof![
        Just("authorization".to_owned()),
        Just("content-type".to_owned()),
        Just("idempotency-key".to_owned()),
        Just("last-event-id".to_owned()),
        "[a-z-]{1,12}",
    ];
    let value = prop_oneof![
        Just(b"Bearer tok".to_vec()),
        Just(b"application/ron".to_vec()),
        Just(b"application/json".to_vec()),
        Just(b"0".to_vec()),
        prop::collection::vec(any::<u8>(), 0..40),
    ];
    (name, value)
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        Just(GOOD.as_bytes().to_vec()),
        (0..GOOD.len()).prop_map(|n| GOOD.as_bytes()[..n].to_vec()),
        Just(br#"(name: "r", tasks: [(id: "x", agent: "b")])"#.to_vec()),
        prop::collection::vec(any::<u8>(), 0..200),
        Just(vec![b'x'; 5000]),
    ]
}

#[test]
fn no_request_panics_the_router_or_gets_an_odd_status() {
    let system = actix_rt::System::new();
    let with_token = system.block_on(async { fixture(Some("tok")) });
    let open = system.block_on(async { fixture(None) });
    let strategy = (
        0..METHODS.len(),
        path(),
        query(),
        prop::collection::vec(header(), 0..5),
        body(),
        any::<bool>(),
    );
    let config = ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |((m, path, query, headers, body, token) in strategy)| {
        let mut req = ApiRequest::new(Method::from_bytes(METHODS[m].as_bytes()).unwrap(), "/");
        req.path = path;
        req.query = query;
        for (k, v) in headers {
            if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_bytes(&v)) {
                req.headers.append(k, v);
            }
        }
        req.body = body.into();
        let state = if token { &with_token.state } else { &open.state };
        let status = system.block_on(handle(req, state)).status().as_u16();
        prop_assert!(SANE.contains(&status), "status {}", status);
    });
}

/// Text that looks like a workflow in either syntax, cut and mutated.
fn workflow_text() -> impl Strategy<Value = String> {
    let json = GOOD.to_owned();
    let ron = r#"(name: "r", tasks: [(id: "x", agent: "b", depends_on: ["y"]), (id: "y", agent: "a", input: "{{x}}")])"#.to_owned();
    prop_oneof![Just(json), Just(ron)].prop_flat_map(|text| {
        let len = text.len();
        (
            Just(text),
            0..=len,
            0..=len,
            "[\\[\\](){}\",:#0-9a-z \\n\\\\]{0,6}",
        )
            .prop_map(|(text, a, b, insert)| {
                let (lo, hi) = (a.min(b), a.max(b));
                let mut out = String::new();
                out.push_str(text.get(..lo).unwrap_or(""));
                out.push_str(&insert);
                out.push_str(text.get(hi..).unwrap_or(""));
                out
            })
    })
}

#[test]
fn mangled_workflows_in_either_syntax_are_answered_not_panicked_on() {
    let system = actix_rt::System::new();
    let open = system.block_on(async { fixture(None) });
    let config = ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(text in workflow_text(), ron in any::<bool>())| {
        let mut req = ApiRequest::new(Method::POST, "/api/workflows");
        if ron {
            req.headers.insert("content-type", HeaderValue::from_static("application/ron"));
        }
        req.body = text.into();
        let status = system.block_on(handle(req, &open.state)).status().as_u16();
        prop_assert!([200, 201, 400, 422].contains(&status), "status {}", status);
    });
}
