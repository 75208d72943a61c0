//! Prometheus metrics: a process-wide recorder (installed once, shared by every app in the
//! process), a middleware counting requests by route template, and `GET /metrics`.
//!
//! Mount: `.merge(metrics::router(handle))` and `.layer(axum::middleware::from_fn(metrics::track))`
//! on the top-level router (after the routes, so `MatchedPath` is set when `track` runs).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const REQUESTS_TOTAL: &str = "http_requests_total";
pub const REQUEST_DURATION: &str = "http_request_duration_seconds";

/// The `route` label of requests that matched no route (404s from the fallback).
pub const UNMATCHED: &str = "unmatched";

/// Bucket bounds for request durations, in seconds (argon2 requests take ~0.1–1 s).
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often histogram samples are folded in, so memory stays bounded without scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the global recorder on the first call and returns a handle to render it; later
/// calls (several apps in one process, as in tests) get clones of the same handle.
pub fn install() -> Result<PrometheusHandle, String> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE.get_or_init(install_once).clone()
}

fn install_once() -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.to_owned()), DURATION_BUCKETS)
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    metrics::describe_counter!(
        REQUESTS_TOTAL,
        "HTTP requests answered, by method, route template and status."
    );
    metrics::describe_histogram!(
        REQUEST_DURATION,
        metrics::Unit::Seconds,
        "Time to answer HTTP requests, by method and route template."
    );
    // Without an HTTP listener nothing else runs upkeep; a plain thread works whether or not
    // a Tokio runtime exists yet.
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".to_owned())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            upkeep.run_upkeep();
        })
        .map_err(|e| format!("spawning the metrics upkeep thread: {e}"))?;
    Ok(handle)
}

/// Counts every request and its duration, labelled by the matched route template (never the
/// raw path, so ids do not multiply label values).
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED.to_owned(), |p| p.as_str().to_owned());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let elapsed = started.elapsed().as_secs_f64();
    let status = response.status().as_u16().to_string();
    metrics::counter!(REQUESTS_TOTAL, "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(REQUEST_DURATION, "method" => method, "route" => route).record(elapsed);
    response
}

/// Standard methods by name; anything else is one label value, so clients cannot invent
/// label values.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// `GET /metrics` in the Prometheus text exposition format.
pub fn router<S: Clone + Send + Sync + 'static>(handle: PrometheusHandle) -> Router<S> {
    Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    handle.render(),
                )
                    .into_response()
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{to_bytes, Body};
    use axum::http::StatusCode;
    use tower::ServiceExt;

    fn app() -> Router {
        let handle = install().unwrap();
        Router::new()
            .route(
                "/test-metrics/things/{id}",
                get(|| async { StatusCode::NO_CONTENT }),
            )
            .merge(router(handle))
            .layer(axum::middleware::from_fn(track))
    }

    async fn call(app: &Router, method: Method, path: &str) -> Response {
        app.clone()
            .oneshot(
                axum::http::Request::builder()
                    .method(method)
                    .uri(path)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap()
    }

    async fn scrape(app: &Router) -> String {
        let response = call(app, Method::GET, "/metrics").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn install_can_be_called_many_times() {
        let a = install().unwrap();
        let b = install().unwrap();
        metrics::counter!("test_install_shared_total").increment(1);
        assert!(a.render().contains("test_install_shared_total 1"));
        assert!(b.render().contains("test_install_shared_total 1"));
    }

    #[tokio::test]
    async fn requests_are_counted_by_route_template_not_raw_path() {
        let app = app();
        for id in ["a1", "b2", "c3"] {
            let path = format!("/test-metrics/things/{id}");
            assert_eq!(
                call(&app, Method::GET, &path).await.status(),
                StatusCode::NO_CONTENT
            );
        }
        let text = scrape(&app).await;
        assert!(
            text.contains(
                r#"http_requests_total{method="GET",route="/test-metrics/things/{id}",status="204"} 3"#
            ),
            "{text}"
        );
        assert!(!text.contains("things/a1"), "{text}");
        assert!(
            text.contains("# TYPE http_request_duration_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"http_request_duration_seconds_count{method="GET",route="/test-metrics/things/{id}"} 3"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"http_request_duration_seconds_bucket{method="GET",route="/test-metrics/things/{id}",le="+Inf"} 3"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn unmatched_requests_and_odd_methods_get_fixed_labels() {
        let app = app();
        let response = call(&app, Method::GET, "/test-metrics/nowhere/12345").await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let odd = Method::from_bytes(b"TESTMETRICSX").unwrap();
        call(&app, odd, "/test-metrics/things/x").await;
        let text = scrape(&app).await;
        assert!(
            text.contains(r#"http_requests_total{method="GET",route="unmatched",status="404"}"#),
            "{text}"
        );
        assert!(!text.contains("12345"), "{text}");
        assert!(!text.contains("TESTMETRICSX"), "{text}");
        assert!(
            text.contains(
                r#"http_requests_total{method="OTHER",route="/test-metrics/things/{id}",status="405"}"#
            ),
            "{text}"
        );
    }
}
