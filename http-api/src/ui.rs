//! The web console at `/ui`: a page, its script and style, and uPlot (MIT, vendored with its
//! licence in `ui/vendor/`) for the rate chart, all compiled into the binary, so a node
//! serves it with no build step and no file on disk.
//!
//! Must never: serve anything but these files (the console reads the API like any client,
//! with the token its user types in), or need authentication for them (they hold no data).

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const APP_CSS: &str = include_str!("ui/app.css");
const UPLOT_JS: &str = include_str!("ui/vendor/uplot.iife.min.js");
const UPLOT_CSS: &str = include_str!("ui/vendor/uplot.min.css");
const UPLOT_LICENSE: &str = include_str!("ui/vendor/UPLOT-LICENSE");

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

fn file(content_type: &'static str, body: &'static str) -> impl IntoResponse + Clone {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// `GET /ui`.
#[utoipa::path(get, path = "/ui", operation_id = "ui", security(()),
    summary = "The web console (its script, style and chart library are under /ui/)",
    responses((status = 200, description = "The console's page", content_type = "text/html", body = String)))]
pub(crate) async fn page() -> impl IntoResponse {
    file(HTML, INDEX)
}

/// The console's routes (merged into the node's router; no state).
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ui", get(page))
        .route("/ui/", get(page))
        .route("/ui/app.js", get(|| async { file(JS, APP_JS) }))
        .route("/ui/app.css", get(|| async { file(CSS, APP_CSS) }))
        .route(
            "/ui/vendor/uplot.iife.min.js",
            get(|| async { file(JS, UPLOT_JS) }),
        )
        .route(
            "/ui/vendor/uplot.min.css",
            get(|| async { file(CSS, UPLOT_CSS) }),
        )
        .route(
            "/ui/vendor/UPLOT-LICENSE",
            get(|| async { file("text/plain; charset=utf-8", UPLOT_LICENSE) }),
        )
}
