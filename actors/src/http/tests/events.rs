//! The event stream without a socket: resumption, what was lost, filters, keep-alives, the
//! end at shutdown.

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use serde_json::json;

use super::{call, fixture, get, req};
use crate::http::{handle, ApiBody};
use agentos_runtime::trace::Trace;

/// The next chunk of a streamed body, as text.
pub(super) async fn next(body: &mut ApiBody) -> String {
    let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("a frame in time")
        .expect("stream still open")
        .expect("infallible");
    String::from_utf8(frame.into_data().expect("data").to_vec()).expect("UTF-8")
}

#[actix_rt::test]
async fn the_event_stream_replays_after_an_id_and_says_what_was_lost() {
    let mut f = fixture(None);
    f.state.trace = Trace::open(None, 3).unwrap();
    for i in 0..5 {
        f.state.trace.emit(
            "task_state",
            json!({"task": format!("w/t{i}"), "agent": "a"}),
        );
    }
    let r = req(Method::GET, "/api/events?last_event_id=1", &[], "");
    let resp = handle(r, &f.state).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    // Id 2 was dropped from the 3-event window (3, 4, 5 remain).
    assert_eq!(
        next(&mut body).await,
        "event: lagged\ndata: {\"missed\":1}\n\n"
    );
    for id in 3..=5 {
        let m = next(&mut body).await;
        assert!(
            m.starts_with(&format!("id: {id}\nevent: task_state\ndata: {{")),
            "{m}"
        );
    }
    f.state
        .trace
        .emit("llm_call", json!({"task": "w/t9", "instance": "a#1"}));
    let live = next(&mut body).await;
    assert!(live.starts_with("id: 6\nevent: llm_call\n"), "{live}");
    // Filters apply to the backlog and the live events alike.
    let r = req(
        Method::GET,
        "/api/events?task=t4&agent=a",
        &[("last-event-id", "0")],
        "",
    );
    let mut body = handle(r, &f.state).await.into_body();
    assert_eq!(
        next(&mut body).await,
        "event: lagged\ndata: {\"missed\":3}\n\n"
    );
    let only = next(&mut body).await;
    assert!(only.starts_with("id: 5\n"), "only t4 passes: {only}");
    // The server shuts down: the stream ends.
    f.stop.send_replace(true);
    assert!(body.frame().await.is_none());
}

#[actix_rt::test]
async fn a_quiet_event_stream_sends_keep_alive_comments() {
    let mut f = fixture(None);
    f.state.keep_alive = Duration::from_millis(20);
    let mut body = handle(req(Method::GET, "/api/events", &[], ""), &f.state)
        .await
        .into_body();
    assert_eq!(next(&mut body).await, ": keep-alive\n\n");
    let bad = req(Method::GET, "/api/events", &[("last-event-id", "abc")], "");
    assert_eq!(call(&f.state, bad).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(
        get(&f.state, "/api/events?colour=red").await.0,
        StatusCode::BAD_REQUEST
    );
}
