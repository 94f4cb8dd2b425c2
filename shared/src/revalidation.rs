//! Conditional reads of the hot routes (`GET /payment/status`, `/payment/entitlements`):
//! each answer carries an `ETag` (a digest of its body) and `Cache-Control: private,
//! no-cache`, so a browser or client keeps it and asks again with `If-None-Match`; the
//! same answer is then a bodiless `304`. The store is still read every time (access
//! changes with time and payments); what is saved is the body on the wire.

use lambda_http::http::{HeaderMap, HeaderValue, StatusCode, header};
use lambda_http::{Body, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The answer to a conditional read of `body`: `304` when `If-None-Match` names its
/// `ETag`, else `200` with the body; both with the `ETag`. (`*` is not honoured: a
/// client revalidates the answer it holds, by its tag.)
pub fn conditional_json<T: Serialize>(request_headers: &HeaderMap, body: &T) -> Response<Body> {
    let text = serde_json::to_string(body).unwrap_or_else(|_| "{}".to_owned());
    let digest = Sha256::digest(text.as_bytes());
    let etag = format!(
        "\"{}\"",
        digest[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let unchanged = request_headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag);
    let mut response = if unchanged {
        let mut response = Response::new(Body::Empty);
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        let mut response = Response::new(Body::Text(text));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    // Kept by the browser (never by a shared cache), and revalidated on every use.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn etag_of(response: &Response<Body>) -> String {
        response.headers()[header::ETAG]
            .to_str()
            .expect("text")
            .to_owned()
    }

    #[test]
    fn the_same_body_is_a_304_and_another_a_200() {
        let first = conditional_json(&HeaderMap::new(), &json!({"has_paid": false}));
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(first.headers()[header::CACHE_CONTROL], "private, no-cache");
        let etag = etag_of(&first);
        let mut asking = HeaderMap::new();
        asking.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"other\", W/{etag}")).expect("header"),
        );
        let again = conditional_json(&asking, &json!({"has_paid": false}));
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert!(matches!(again.body(), Body::Empty));
        assert_eq!(etag_of(&again), etag);
        let mut any = HeaderMap::new();
        any.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert_eq!(
            conditional_json(&any, &json!({"has_paid": false})).status(),
            StatusCode::OK
        );
        let changed = conditional_json(&asking, &json!({"has_paid": true}));
        assert_eq!(changed.status(), StatusCode::OK);
        assert_ne!(etag_of(&changed), etag);
    }
}
