//! Events of the control plane's HTTP API: one per answered request.

use std::time::Duration;

use super::names as m;

/// `route` of a request whose path matched no route (so the label set stays bounded: the
/// route table's templates plus this).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// `method` of [`API_REQUESTS`](super::names::API_REQUESTS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiMethod {
    /// `GET`.
    Get,
    /// `HEAD`.
    Head,
    /// `POST`.
    Post,
    /// `DELETE`.
    Delete,
    /// Any other method (answered 405 or 404).
    Other,
}

impl ApiMethod {
    /// The method named `method` (an HTTP method token, upper case).
    pub fn of(method: &str) -> Self {
        match method {
            "GET" => ApiMethod::Get,
            "HEAD" => ApiMethod::Head,
            "POST" => ApiMethod::Post,
            "DELETE" => ApiMethod::Delete,
            _ => ApiMethod::Other,
        }
    }

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            ApiMethod::Get => "GET",
            ApiMethod::Head => "HEAD",
            ApiMethod::Post => "POST",
            ApiMethod::Delete => "DELETE",
            ApiMethod::Other => "other",
        }
    }
}

/// The API answered a request. No trace line (what a request changes is traced by the
/// scheduler, which does it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiRequestFinished {
    /// The route template that matched (`/api/workflows/{id}`), never the raw path, or
    /// [`UNMATCHED_ROUTE`].
    pub route: &'static str,
    /// The request's method.
    pub method: ApiMethod,
    /// The status answered.
    pub status: u16,
    /// From the request's head to the response's head (for the event stream, until the
    /// stream starts).
    pub duration: Duration,
}

impl ApiRequestFinished {
    /// Counts the request and records its duration.
    pub fn emit(&self) {
        metrics::counter!(m::API_REQUESTS, "route" => self.route, "method" => self.method.label(),
            "status" => status_label(self.status))
        .increment(1);
        metrics::histogram!(m::API_REQUEST_DURATION, "route" => self.route)
            .record(self.duration.as_secs_f64());
        tracing::debug!(
            route = self.route,
            method = self.method.label(),
            status = self.status,
            duration_secs = self.duration.as_secs_f64(),
            "api request"
        );
    }
}

/// The `status` label: the three-digit code. Statuses outside 100..=599 (which HTTP does not
/// have) are `other`, so the label stays bounded whatever the caller passes.
fn status_label(status: u16) -> String {
    if (100..=599).contains(&status) {
        status.to_string()
    } else {
        "other".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::testing::metrics_of;

    #[test]
    fn a_request_is_counted_by_route_method_and_status_and_timed_by_route() {
        let got = metrics_of(|| {
            for status in [201, 201, 422] {
                ApiRequestFinished {
                    route: "/api/workflows",
                    method: ApiMethod::of("POST"),
                    status,
                    duration: Duration::from_millis(5),
                }
                .emit();
            }
            ApiRequestFinished {
                route: UNMATCHED_ROUTE,
                method: ApiMethod::of("BREW"),
                status: 404,
                duration: Duration::from_millis(1),
            }
            .emit();
        });
        let created = [
            ("route", "/api/workflows"),
            ("method", "POST"),
            ("status", "201"),
        ];
        assert_eq!(got.counter(m::API_REQUESTS, &created), Some(2));
        assert_eq!(
            got.counter(
                m::API_REQUESTS,
                &[
                    ("route", "/api/workflows"),
                    ("method", "POST"),
                    ("status", "422")
                ]
            ),
            Some(1)
        );
        assert_eq!(
            got.counter(
                m::API_REQUESTS,
                &[
                    ("route", "unmatched"),
                    ("method", "other"),
                    ("status", "404")
                ]
            ),
            Some(1)
        );
        assert_eq!(
            got.histogram(m::API_REQUEST_DURATION, &[("route", "/api/workflows")]),
            Some(vec![0.005, 0.005, 0.005])
        );
    }

    #[test]
    fn impossible_statuses_share_one_label() {
        assert_eq!(status_label(200), "200");
        assert_eq!(status_label(0), "other");
        assert_eq!(status_label(1000), "other");
    }
}
