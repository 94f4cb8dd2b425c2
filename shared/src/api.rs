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
    pub dodo_code: Option<Box<str>>,
    /// Seconds after which the caller may retry (`Retry-After`), when we know.
    pub retry_after: Option<u32>,
    /// What went wrong inside, for the log only: never sent to the caller.
    pub detail: Option<Box<str>>,
    /// The methods the route takes (`Allow`), on a `405`.
    pub allow: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            dodo_code: None,
            retry_after: None,
            detail: None,
            allow: None,
        }
    }

    /// Keeps `detail` for the log line of this error (never for the answer).
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into().into_boxed_str());
        self
    }

    /// `429` after too many calls: retry after `seconds`.
    /// Every user's requests together have spent the Dodo budget for now (or Dodo itself
    /// said so): not this caller's doing; retry after `seconds`.
    pub fn busy(seconds: i64) -> Self {
        let mut error = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!("payments are busy right now; retry in {seconds} s"),
        );
        error.retry_after = Some(seconds.clamp(1, i64::from(u32::MAX)) as u32);
        error
    }

    pub fn rate_limited(seconds: i64) -> Self {
        let mut error = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "too many requests for this user: at most {} a minute; retry in {seconds} s",
                crate::store::RATE_LIMIT_CALLS
            ),
        );
        error.retry_after = Some(seconds.clamp(1, i64::from(u32::MAX)) as u32);
        error
    }

    /// `504` when a request could not finish in time: nothing is known to have changed
    /// or not, and every write is idempotent, so the caller retries.
    pub fn deadline_exceeded() -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "the request took too long to complete; please retry",
        )
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

    /// `405`, naming the methods the route takes.
    pub fn method_not_allowed(allow: &'static str) -> Self {
        let mut error = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("this route takes {allow} only"),
        );
        error.allow = Some(allow);
        error
    }

    /// The JSON answer, with the request id so that a support request can be matched to
    /// the log line (which alone holds `detail`).
    pub fn into_response_for(self, request_id: Option<&str>) -> Response<Body> {
        if self.status.is_server_error() {
            tracing::warn!(
                status = self.status.as_u16(),
                code = self.code,
                request_id,
                detail = self.detail.as_deref().unwrap_or(""),
                "request failed"
            );
        }
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(dodo_code) = self.dodo_code {
            error["dodo_code"] = json!(dodo_code);
        }
        if let Some(request_id) = request_id {
            error["request_id"] = json!(request_id);
        }
        let mut response = json_response(self.status, &json!({ "error": error }));
        if let Some(seconds) = self.retry_after
            && let Ok(value) = header::HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if let Some(allow) = self.allow {
            response
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static(allow));
        }
        response
    }

    pub fn into_response(self) -> Response<Body> {
        self.into_response_for(None)
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        // The SDK's message (endpoints, table names, ARNs) goes to the log only.
        match err {
            StoreError::Unavailable(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the payment store is unavailable; please retry",
            ),
            // Too many requests at once on one record (the shared Dodo budget, a usage
            // counter): the store is up and nothing was written, so the caller is told
            // to come back in a second, as for a spent budget (the load test's finding).
            StoreError::Contention => Self::busy(1),
            StoreError::Corrupt(_) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "a stored record could not be read",
            ),
        }
        .with_detail(err.to_string())
    }
}

impl From<DodoError> for ApiError {
    fn from(err: DodoError) -> Self {
        let detail = err.to_string();
        match err {
            DodoError::Timeout => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "dodo_timeout",
                "Dodo Payments did not answer in time; please retry",
            ),
            DodoError::Unavailable(_) => Self::new(
                StatusCode::BAD_GATEWAY,
                "dodo_unavailable",
                "Dodo Payments could not be reached; please retry",
            ),
            DodoError::RateLimited { retry_after } => Self::busy(retry_after),
            DodoError::Api {
                status,
                ref code,
                ref message,
            } => {
                let mut error = Self::new(
                    StatusCode::BAD_GATEWAY,
                    "dodo_error",
                    format!("Dodo Payments refused the request ({status} {code}: {message})"),
                );
                error.dodo_code = Some(code.as_str().into());
                error
            }
            DodoError::Decode(_) => Self::new(
                StatusCode::BAD_GATEWAY,
                "dodo_bad_response",
                "Dodo Payments answered in a way the paywall could not read; please retry",
            ),
        }
        .with_detail(detail)
    }
}

/// How long an API request may take before it answers `504` itself: well before API
/// Gateway's 30 s integration limit (which would answer a bare 503) and the function's
/// timeout.
pub const REQUEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(25);
/// The webhook's: inside Dodo's delivery timeout, so that a slow store answers a `504`
/// Dodo retries, instead of a timeout Dodo cannot tell from a lost answer.
pub const WEBHOOK_DEADLINE: std::time::Duration = std::time::Duration::from_secs(12);

/// The request id a caller quotes to support: Lambda's, else API Gateway's.
pub fn request_id(request: &Request) -> Option<String> {
    use lambda_http::request::RequestContext;
    if let Some(context) = request.lambda_context_ref()
        && !context.request_id.is_empty()
    {
        return Some(context.request_id.clone());
    }
    match request.request_context_ref()? {
        RequestContext::ApiGatewayV2(context) => context.request_id.clone(),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// Answers `request` with what `respond` produces within [`REQUEST_DEADLINE`], turning
/// an error into its JSON answer (with the request id) and a deadline into a JSON `504`.
pub async fn answer(
    request: &Request,
    respond: impl std::future::Future<Output = Result<Response<Body>, ApiError>>,
) -> Response<Body> {
    answer_within(REQUEST_DEADLINE, request, respond).await
}

/// [`answer`] with another deadline.
pub async fn answer_within(
    deadline: std::time::Duration,
    request: &Request,
    respond: impl std::future::Future<Output = Result<Response<Body>, ApiError>>,
) -> Response<Body> {
    let outcome = tokio::time::timeout(deadline, respond)
        .await
        .unwrap_or_else(|_| Err(ApiError::deadline_exceeded()));
    outcome.unwrap_or_else(|err| err.into_response_for(request_id(request).as_deref()))
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
    /// The identity provider vouches for the e-mail (`email_verified` is `"true"`). Only a
    /// verified e-mail may ever link a payment to this user.
    pub email_verified: bool,
}

impl Caller {
    /// The caller's e-mail, if verified.
    pub fn verified_email(&self) -> Option<&Email> {
        self.email.as_ref().filter(|_| self.email_verified)
    }
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
    let email_verified = claims
        .get("email_verified")
        .is_some_and(|raw| raw.eq_ignore_ascii_case("true"));
    Ok(Caller {
        user_id,
        email,
        email_verified,
    })
}

/// The founder's backend, as API Gateway's IAM authorization verified it (SigV4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerCaller {
    /// The caller's IAM identity (`userArn`, else `callerId`): who is named in the audit
    /// trail.
    pub identity: String,
}

/// The server routes' caller: only an IAM-signed request. An end user's JWT (which API
/// Gateway would refuse on these routes anyway) is refused here too, with `403`.
pub fn server_caller(request: &Request) -> Result<ServerCaller, ApiError> {
    let forbidden = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the server API takes IAM-signed (SigV4) requests from the founder's backend only",
        )
    };
    let iam = request
        .request_context_ref()
        .and_then(|context| context.authorizer())
        .and_then(|authorizer| authorizer.iam.as_ref())
        .ok_or_else(forbidden)?;
    let identity = iam
        .user_arn
        .as_deref()
        .or(iam.caller_id.as_deref())
        .filter(|id| !id.is_empty())
        .ok_or_else(forbidden)?;
    Ok(ServerCaller {
        identity: identity.to_owned(),
    })
}

/// The request body as JSON. An empty body is the type's default; anything that is not
/// the expected JSON is a 400 that names the problem.
pub fn json_body<T: DeserializeOwned + Default>(request: &Request) -> Result<T, ApiError> {
    let bytes = request.body().as_ref();
    let Some(first) = bytes.iter().find(|b| !b.is_ascii_whitespace()) else {
        return Ok(T::default());
    };
    // serde would read a JSON array into a struct field by field: only an object is one.
    if *first != b'{' {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("the body is not the expected JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn body_of(response: &Response<Body>) -> serde_json::Value {
        match response.body() {
            Body::Text(text) => serde_json::from_str(text).unwrap_or_default(),
            _ => serde_json::Value::Null,
        }
    }

    #[tokio::test]
    async fn a_request_past_its_deadline_answers_a_json_504_itself() {
        let request = Request::new(Body::Empty);
        let slow = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(json_response(StatusCode::OK, &json!({})))
        };
        let response = answer_within(Duration::from_millis(20), &request, slow).await;
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(body_of(&response)["error"]["code"], "timeout");
    }

    #[test]
    fn server_errors_keep_their_detail_out_of_the_answer() {
        let error: ApiError = StoreError::Unavailable(
            "dispatch failure: io error: tcp connect error: 127.0.0.1:8000 table paywall-prod"
                .into(),
        )
        .into();
        let response = error.into_response_for(Some("req-1"));
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = body_of(&response);
        assert_eq!(body["error"]["code"], "store_unavailable");
        assert_eq!(body["error"]["request_id"], "req-1");
        let text = body.to_string();
        assert!(
            !text.contains("dispatch") && !text.contains("paywall-prod"),
            "{text}"
        );

        let limited = ApiError::rate_limited(7).into_response();
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            limited
                .headers()
                .get(header::RETRY_AFTER)
                .map(|v| v.as_bytes()),
            Some(&b"7"[..])
        );
    }
}
