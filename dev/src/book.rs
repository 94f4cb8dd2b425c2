//! `make dev` serves the documentation beside the API: the book (`docs/`, which
//! `make docs` builds into `target/book`) at `/docs/`, and `openapi.yaml` at
//! `/openapi.yaml`. Book files are read from disk at each request (a rebuilt book shows at
//! the next reload), with the content type of their extension, `index.html` for a
//! folder, and nothing outside the book's folder: a path is decoded once and must be
//! plain names only (no `..`, no `.`, no absolute part), and what it names must still be
//! inside the folder once symbolic links are followed. Until the book is built, `/docs/`
//! answers a page that says how to build it.

use std::path::{Component, Path, PathBuf};

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The document the local server answers at `/openapi.yaml` (the repository's own).
pub const OPENAPI: &str = include_str!("../../openapi.yaml");

/// Where the book is read from: `PAYWALL_BOOK_DIR`, else the workspace's `target/book`
/// (where `make docs` builds it; `docs/book.toml`'s `build-dir`).
pub fn book_dir() -> PathBuf {
    match std::env::var_os("PAYWALL_BOOK_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/book"),
    }
}

/// Whether a built book is there to serve.
pub fn is_built(dir: &Path) -> bool {
    dir.join("index.html").is_file()
}

/// `GET /openapi.yaml`.
pub async fn openapi() -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/yaml"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        OPENAPI,
    )
        .into_response()
}

/// `GET /docs` and everything under `/docs/`.
pub async fn docs(uri: Uri) -> Response {
    serve(&book_dir(), uri.path()).await
}

/// The answer for `request_path` (the URI's path, still percent-encoded) from the book
/// in `dir`.
pub async fn serve(dir: &Path, request_path: &str) -> Response {
    let Some(rest) = request_path.strip_prefix("/docs") else {
        return not_found();
    };
    // `/docs` itself: the book's relative links need the trailing slash.
    if rest.is_empty() {
        return redirect("/docs/");
    }
    let Some(relative) = rest.strip_prefix('/').and_then(safe_relative_path) else {
        return not_found();
    };
    if !is_built(dir) {
        return if relative.as_os_str().is_empty() {
            not_built_page(dir)
        } else {
            not_found()
        };
    }
    let (Ok(root), Ok(target)) = (
        tokio::fs::canonicalize(dir).await,
        tokio::fs::canonicalize(dir.join(&relative)).await,
    ) else {
        return not_found();
    };
    if !target.starts_with(&root) {
        return not_found();
    }
    let file = if target.is_dir() {
        if !request_path.ends_with('/') {
            return redirect(&format!("{request_path}/"));
        }
        target.join("index.html")
    } else {
        target
    };
    match tokio::fs::read(&file).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, content_type(&file)),
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            bytes,
        )
            .into_response(),
        Err(_) => not_found(),
    }
}

/// The path below `/docs/`, percent-decoded once, as plain names only; `None` for
/// anything that could leave the folder or is not a path (`..`, `.`, a root, a NUL, a
/// backslash, malformed escapes or UTF-8).
pub fn safe_relative_path(encoded: &str) -> Option<PathBuf> {
    let decoded = percent_decode(encoded)?;
    if decoded.contains('\0') || decoded.contains('\\') {
        return None;
    }
    let mut path = PathBuf::new();
    for component in Path::new(&decoded).components() {
        match component {
            Component::Normal(name) => path.push(name),
            _ => return None,
        }
    }
    // `Path::components` drops `.` in the middle of a path (`a/./b`): refuse it too.
    if decoded.split('/').any(|part| part == "." || part == "..") {
        return None;
    }
    Some(path)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The content type of a book file, by its extension (what mdBook writes).
pub fn content_type(path: &Path) -> &'static str {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("woff") => "font/woff",
        Some("ttf") => "font/ttf",
        Some("otf") => "font/otf",
        Some("txt" | "md") => "text/plain; charset=utf-8",
        Some("yaml" | "yml") => "application/yaml",
        _ => "application/octet-stream",
    }
}

fn redirect(location: &str) -> Response {
    let mut response = StatusCode::PERMANENT_REDIRECT.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"error": {
            "code": "not_found",
            "message": "no such page in the book",
        }})),
    )
        .into_response()
}

/// What `/docs/` says before `make docs` has built the book.
fn not_built_page(dir: &Path) -> Response {
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>The book is not built yet</title></head>\n\
         <body style=\"font-family: sans-serif; max-width: 40em; margin: 3em auto\">\n\
         <h1>The book is not built yet</h1>\n\
         <p>Run <code>make docs</code> in the repository, then reload this page. It builds the book \
         from <code>docs/</code> into <code>{}</code> and checks its links; its first run installs \
         mdBook into <code>target/tools/</code>.</p>\n\
         <p>Meanwhile: the chapters are Markdown in <code>docs/src/</code>, and the API is described \
         in <a href=\"/openapi.yaml\">/openapi.yaml</a>.</p>\n</body></html>\n",
        html_escape(&dir.display().to_string())
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from(page),
    )
        .into_response()
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_below_the_book() {
        assert_eq!(safe_relative_path(""), Some(PathBuf::new()));
        assert_eq!(
            safe_relative_path("reference/api.html"),
            Some(PathBuf::from("reference/api.html"))
        );
        assert_eq!(
            safe_relative_path("a%20b.html"),
            Some(PathBuf::from("a b.html"))
        );
        for bad in [
            "..",
            "../Cargo.toml",
            "reference/../../Cargo.toml",
            "%2e%2e/Cargo.toml",
            "%2E%2E%2FCargo.toml",
            "/etc/passwd",
            "%2fetc/passwd",
            "./index.html",
            "a/./b",
            "..%5c..%5cCargo.toml",
            "index.html%00.png",
            "%zz",
            "%",
            "%ff",
        ] {
            assert_eq!(safe_relative_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(
            content_type(Path::new("a/index.html")),
            "text/html; charset=utf-8"
        );
        assert_eq!(
            content_type(Path::new("book-609e4cb8.js")),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            content_type(Path::new("css/chrome.css")),
            "text/css; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("favicon.svg")), "image/svg+xml");
        assert_eq!(content_type(Path::new("fonts/x.woff2")), "font/woff2");
        assert_eq!(
            content_type(Path::new("LICENSE")),
            "application/octet-stream"
        );
    }
}
