//! Lambda events as API Gateway v2 (HTTP API with a JWT authorizer) and Function URLs
//! deliver them, built from the recorded-shape fixtures in `dev/fixtures/`.

use base64::Engine;
use serde_json::{Value, json};

const API_GATEWAY_V2: &str = include_str!("../fixtures/apigw-v2-jwt.json");
const FUNCTION_URL: &str = include_str!("../fixtures/function-url.json");

/// An HTTP API event for `method path`, with the JWT claims `(sub, email)` that API
/// Gateway's authorizer would pass (or no authorizer at all), and an optional body.
pub fn api_gateway_event(
    method: &str,
    path: &str,
    claims: Option<(&str, Option<&str>)>,
    body: Option<&str>,
) -> Value {
    let mut event: Value = serde_json::from_str(API_GATEWAY_V2).unwrap_or_default();
    let route = format!("{method} {path}");
    event["routeKey"] = json!(route);
    event["rawPath"] = json!(path);
    event["requestContext"]["routeKey"] = json!(route);
    event["requestContext"]["http"]["method"] = json!(method);
    event["requestContext"]["http"]["path"] = json!(path);
    match claims {
        None => {
            if let Some(context) = event["requestContext"].as_object_mut() {
                context.remove("authorizer");
            }
        }
        Some((sub, email)) => {
            let claims = &mut event["requestContext"]["authorizer"]["jwt"]["claims"];
            claims["sub"] = json!(sub);
            match email {
                Some(email) => claims["email"] = json!(email),
                None => {
                    if let Some(claims) = claims.as_object_mut() {
                        claims.remove("email");
                    }
                }
            }
        }
    }
    if let Some(body) = body {
        event["body"] = json!(body);
        event["headers"]["content-type"] = json!("application/json");
    }
    event
}

/// An API Gateway v2 event for a `/server/` route, signed (as API Gateway's IAM
/// authorization hands it over) by `identity`'s IAM user, or unsigned. `path` may carry
/// a query string.
pub fn server_event(method: &str, path: &str, identity: Option<&str>, body: Option<&str>) -> Value {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let mut event = api_gateway_event(method, path, None, body);
    event["rawQueryString"] = json!(query);
    if let Some(identity) = identity {
        event["requestContext"]["authorizer"] = json!({"iam": {
            "accessKey": "AKIAEXAMPLE", "accountId": "123456789012",
            "callerId": "AIDAEXAMPLE", "userArn": identity, "userId": "AIDAEXAMPLE"
        }});
    }
    event
}

/// A Function URL event carrying `body` (base64-encoded when asked, as Lambda does for
/// binary or compressed bodies) and the given headers.
pub fn function_url_event(body: &[u8], headers: &[(&str, String)], base64: bool) -> Value {
    let mut event: Value = serde_json::from_str(FUNCTION_URL).unwrap_or_default();
    if base64 {
        event["body"] = json!(base64::engine::general_purpose::STANDARD.encode(body));
        event["isBase64Encoded"] = json!(true);
    } else {
        event["body"] = json!(String::from_utf8_lossy(body));
    }
    for (name, value) in headers {
        event["headers"][*name] = json!(value);
    }
    event
}

/// A Function URL event for `method` with no body (e.g. a stray `GET`).
pub fn function_url_method(method: &str) -> Value {
    let mut event: Value = serde_json::from_str(FUNCTION_URL).unwrap_or_default();
    event["requestContext"]["http"]["method"] = json!(method);
    event
}
