//! The HTTP edge shared by the handlers: the caller's identity from the JWT claims that
//! API Gateway verified, JSON bodies in and out, and one error type mapped to a status
//! once. Errors are `{"error": {"code", "message"}}`, never a panic or a stack trace.

use lambda_http::http::{StatusCode, header};
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::dodo::DodoError;
use crate::ids::{Email, UserId};
use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Dodo's own error code, when Dodo refused a request.
    pub dodo_code: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            dodo_code: None,
        }
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a verified identity (JWT `sub` claim) is required",
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not accept that method",
        )
    }

    pub fn into_response(self) -> Response<Body> {
        if self.status.is_server_error() {
            tracing::warn!(status = self.status.as_u16(), code = self.code, detail = %self.message, "request failed");
        }
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(dodo_code) = self.dodo_code {
            error["dodo_code"] = json!(dodo_code);
        }
        json_response(self.status, &json!({ "error": error }))
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(_) | StoreError::Contention => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                format!("{err}; nothing was changed, please retry"),
            ),
            StoreError::Corrupt(_) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                err.to_string(),
            ),
        }
    }
}

impl From<DodoError> for ApiError {
    fn from(err: DodoError) -> Self {
        match err {
            DodoError::Timeout => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "dodo_timeout",
                "Dodo Payments did not answer in time; please retry",
            ),
            DodoError::Unavailable(_) => Self::new(
                StatusCode::BAD_GATEWAY,
                "dodo_unavailable",
                format!("{err}; please retry"),
            ),
            DodoError::Api {
                status,
                ref code,
                ref message,
            } => Self {
                status: StatusCode::BAD_GATEWAY,
                code: "dodo_error",
                message: format!("Dodo Payments refused the request ({status} {code}: {message})"),
                dodo_code: Some(code.clone()),
            },
            DodoError::Decode(_) => Self::new(
                StatusCode::BAD_GATEWAY,
                "dodo_bad_response",
                err.to_string(),
            ),
        }
    }
}

pub fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response<Body> {
    let text = serde_json::to_string(body).unwrap_or_else(|_| "{}".to_owned());
    let mut response = Response::new(Body::Text(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    // Access state is per user and changes with payments: never cache it.
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

/// The signed-in user, as API Gateway's JWT authorizer verified them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub user_id: UserId,
    pub email: Option<Email>,
}

/// Reads `requestContext.authorizer.jwt.claims`. No claims, no `sub`: 401, never a
/// default user.
pub fn caller(request: &Request) -> Result<Caller, ApiError> {
    let claims = request
        .request_context_ref()
        .and_then(|context| context.authorizer())
        .and_then(|authorizer| authorizer.jwt.as_ref())
        .map(|jwt| &jwt.claims)
        .ok_or_else(ApiError::unauthorized)?;
    let user_id = claims
        .get("sub")
        .and_then(|sub| UserId::parse(sub).ok())
        .ok_or_else(ApiError::unauthorized)?;
    // An unusable e-mail claim is dropped, not fatal: Dodo's page asks for one.
    let email = claims.get("email").and_then(|raw| Email::parse(raw).ok());
    Ok(Caller { user_id, email })
}

/// The request body as JSON. An empty body is the type's default; anything that is not
/// the expected JSON is a 400 that names the problem.
pub fn json_body<T: DeserializeOwned + Default>(request: &Request) -> Result<T, ApiError> {
    let bytes = request.body().as_ref();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("the body is not the expected JSON: {e}")))
}
