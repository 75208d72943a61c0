//! `GET /docs`: Swagger UI over `/openapi.json`.
//!
//! The assets come from the npm package `swagger-ui-dist` (version in
//! `assets/swagger-ui/VERSION`) and are compiled into the binary, so the page works offline
//! and no build step downloads anything. The page has no inline script (the start-up code is
//! `docs-init.js`), so it runs under a strict `Content-Security-Policy`.
//!
//! Asset URLs carry `?v=<hash of every asset>`, so the assets can be cached for a year: a new
//! build with different assets gets new URLs.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// The policy on the HTML page. Swagger UI sets inline `style` attributes and uses `data:`
/// images in its CSS; everything else, the spec included, comes from this origin.
pub const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'";

/// Assets are cache-busted by the `?v=` query, so they never change under one URL.
const ASSET_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

const INDEX_TEMPLATE: &str = include_str!("../../assets/swagger-ui/index.html");

/// `(file name, content type, bytes)`, each served at `/docs/assets/{file name}`.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "swagger-ui-bundle.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js"),
    ),
    (
        "swagger-ui.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/swagger-ui/swagger-ui.css"),
    ),
    (
        "docs-init.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/swagger-ui/docs-init.js"),
    ),
    (
        "favicon-32x32.png",
        "image/png",
        include_bytes!("../../assets/swagger-ui/favicon-32x32.png"),
    ),
];

/// The page, with `{{v}}` replaced by a hash of all assets (FNV-1a, 64 bits).
static INDEX: LazyLock<String> = LazyLock::new(|| {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, _, bytes) in ASSETS {
        for byte in name.bytes().chain(bytes.iter().copied()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    INDEX_TEMPLATE.replace("{{v}}", &format!("{hash:016x}"))
});

/// `GET /docs` (and `/docs/` redirecting to it) plus one route per asset under
/// `/docs/assets/`. Unknown asset names fall through to the app's fallback.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new()
        .route("/docs", get(index))
        .route("/docs/", get(|| async { Redirect::permanent("/docs") }));
    for &(name, content_type, bytes) in ASSETS {
        router = router.route(
            &format!("/docs/assets/{name}"),
            get(move || async move { asset(content_type, bytes) }),
        );
    }
    router
}

async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        INDEX.as_str(),
    )
        .into_response()
}

fn asset(content_type: &'static str, bytes: &'static [u8]) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, ASSET_CACHE_CONTROL),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        bytes,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{to_bytes, Body};
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    async fn get_path(path: &str) -> Response {
        router::<()>()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    fn header(response: &Response, name: header::HeaderName) -> &str {
        response.headers().get(name).unwrap().to_str().unwrap()
    }

    async fn body(response: Response) -> Vec<u8> {
        to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec()
    }

    #[tokio::test]
    async fn docs_page_is_html_pointing_at_the_spec_with_a_strict_csp() {
        let response = get_path("/docs").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            header(&response, header::CONTENT_TYPE),
            "text/html; charset=utf-8"
        );
        assert_eq!(
            header(&response, header::CONTENT_SECURITY_POLICY),
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'"
        );
        let html = String::from_utf8(body(response).await).unwrap();
        assert!(html.contains("/openapi.json"), "{html}");
        assert!(!html.contains("{{v}}"), "{html}");
        // No inline script: every <script> has a src, so script-src 'self' is enough.
        assert_eq!(
            html.matches("<script").count(),
            html.matches("<script src=\"/docs/assets/").count()
        );
    }

    #[tokio::test]
    async fn every_asset_the_page_links_is_served_with_its_type_and_long_caching() {
        let html = String::from_utf8(body(get_path("/docs").await).await).unwrap();
        let links: Vec<&str> = html
            .split('"')
            .filter(|s| s.starts_with("/docs/assets/"))
            .collect();
        assert_eq!(links.len(), ASSETS.len(), "{links:?}");
        for link in links {
            let response = get_path(link).await;
            assert_eq!(response.status(), StatusCode::OK, "{link}");
            let name = link
                .trim_start_matches("/docs/assets/")
                .split('?')
                .next()
                .unwrap();
            let expected = match name.rsplit('.').next().unwrap() {
                "js" => "text/javascript; charset=utf-8",
                "css" => "text/css; charset=utf-8",
                "png" => "image/png",
                other => panic!("unexpected asset type {other}"),
            };
            assert_eq!(header(&response, header::CONTENT_TYPE), expected, "{link}");
            assert_eq!(
                header(&response, header::CACHE_CONTROL),
                ASSET_CACHE_CONTROL
            );
            let (_, _, bytes) = ASSETS.iter().find(|(n, _, _)| *n == name).unwrap();
            assert_eq!(body(response).await, *bytes, "{link}");
        }
    }

    #[tokio::test]
    async fn init_script_points_swagger_ui_at_the_page_spec_url() {
        let js =
            String::from_utf8(body(get_path("/docs/assets/docs-init.js").await).await).unwrap();
        assert!(js.contains("SwaggerUIBundle"), "{js}");
        assert!(js.contains("data-spec-url"), "{js}");
        assert!(js.contains("validatorUrl: null"), "{js}");
    }

    #[tokio::test]
    async fn unknown_assets_are_not_found_and_the_slash_form_redirects() {
        assert_eq!(
            get_path("/docs/assets/index.html").await.status(),
            StatusCode::NOT_FOUND
        );
        let response = get_path("/docs/").await;
        assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(header(&response, header::LOCATION), "/docs");
    }
}
