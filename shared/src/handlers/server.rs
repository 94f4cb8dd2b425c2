//! The server API, for the founder's own backend (IAM-signed; never an end user's JWT):
//!
//! - `POST /server/usage` `{user_id, feature, amount, idempotency_key}` -> `{allowed,
//!   remaining}`: checks and consumes a metered limit atomically; a repeated key answers
//!   as the first call did and consumes nothing more.
//! - `GET /server/users/{user_id}` -> entitlements, access, subscriptions and a page of the
//!   audit trail (newest first; `?limit=` and `?cursor=`).
//! - `POST /server/users/{user_id}/grants` `{plan, days, reason}` gives access without a
//!   payment; `DELETE` (body `{reason}`, optional) takes it back. Both are audited with the
//!   reason and the caller's IAM identity, and published as access events.

use lambda_http::http::{HeaderValue, Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::json;

use super::StartError;
use crate::access::AccessView;
use crate::access_events::access_event;
use crate::api::{
    ApiError, ServerCaller, answer, json_body, json_response, request_id, server_caller,
};
use crate::config::{StoreConfig, Vars};
use crate::entitlements::{Entitlements, Standing};
use crate::ids::UserId;
use crate::plan::{Catalog, FREE_PLAN};
use crate::runtime::Handler;
use crate::store::{AuditEntry, ServerGrant, Store, Trigger, UsageError, UsageRequest};
use crate::time::Clock;

/// The largest single amount one usage call may consume.
pub const MAX_USAGE_AMOUNT: u64 = 1_000_000_000;
/// A grant lasts at most this many days (ten years).
pub const MAX_GRANT_DAYS: u32 = 3660;
const DEFAULT_AUDIT_PAGE: usize = 20;
const MAX_AUDIT_PAGE: usize = 100;

pub struct ServerHandler {
    store: Store,
    catalog: Catalog,
    clock: Clock,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UsageBody {
    user_id: Option<String>,
    feature: Option<String>,
    amount: Option<serde_json::Value>,
    idempotency_key: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    plan: Option<String>,
    days: Option<serde_json::Value>,
    reason: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    reason: Option<String>,
}

fn whole_number(value: &Option<serde_json::Value>, name: &str, max: u64) -> Result<u64, ApiError> {
    // JSON Schema's integers include `2.0`.
    value
        .as_ref()
        .and_then(|v| {
            v.as_u64().or_else(|| {
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 1.0 && *f <= max as f64)
                    .map(|f| f as u64)
            })
        })
        .filter(|v| (1..=max).contains(v))
        .ok_or_else(|| {
            ApiError::bad_request(format!("`{name}` must be a whole number from 1 to {max}"))
        })
}

/// 1 to `max` printable ASCII characters (a JWT `sub`, a key): what openapi.yaml says.
fn printable(raw: &str, max: usize) -> bool {
    (1..=max).contains(&raw.len()) && raw.bytes().all(|b| (b' '..=b'~').contains(&b))
}

fn user_id(raw: &str) -> Result<UserId, ApiError> {
    if !printable(raw, 256) {
        return Err(ApiError::bad_request(
            "`user_id` must be 1 to 256 printable ASCII characters",
        ));
    }
    UserId::parse(raw).map_err(|e| ApiError::bad_request(format!("`user_id`: {e}")))
}

fn reason_text(raw: &str) -> Result<String, ApiError> {
    if raw.chars().count() > 500 || raw.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "`reason` must be at most 500 characters, without control characters",
        ));
    }
    Ok(raw.to_owned())
}

/// A value that must be given (not absent or null), exactly as given.
fn given<'a>(value: &'a Option<String>, name: &str) -> Result<&'a str, ApiError> {
    value
        .as_deref()
        .ok_or_else(|| ApiError::bad_request(format!("`{name}` is required")))
}

/// `%XX` escapes in a path segment (user ids such as `auth0|123` arrive encoded).
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl ServerHandler {
    pub fn new(store: Store, catalog: Catalog) -> Self {
        Self {
            store,
            catalog,
            clock: Clock::system(),
        }
    }

    /// Reads the time from `clock` instead of the system's (the local test clock).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub async fn from_env() -> Result<Self, StartError> {
        let vars = Vars::process();
        let table = StoreConfig::from_vars(&vars)?;
        let catalog = Catalog::from_vars(&vars)?;
        Ok(Self::new(Store::connect(&table), catalog))
    }

    pub async fn respond(&self, request: &Request) -> Result<Response<Body>, ApiError> {
        let caller = server_caller(request)?;
        let path = request.uri().path().trim_end_matches('/');
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        let method = request.method();
        match segments.as_slice() {
            ["server", "usage"] if method == Method::POST => self.usage(request).await,
            ["server", "usage"] => Err(ApiError::method_not_allowed("POST")),
            ["server", "users", user] => {
                let user = user_id(&percent_decode(user).unwrap_or_default())?;
                match *method {
                    Method::GET => self.user(request, &user).await,
                    _ => Err(ApiError::method_not_allowed("GET")),
                }
            }
            ["server", "users", user, "grants"] => {
                let user = user_id(&percent_decode(user).unwrap_or_default())?;
                match *method {
                    Method::POST => self.grant(request, &caller, &user).await,
                    Method::DELETE => self.revoke(request, &caller, &user).await,
                    _ => Err(ApiError::method_not_allowed("POST, DELETE")),
                }
            }
            _ => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such server route",
            )),
        }
    }

    async fn usage(&self, request: &Request) -> Result<Response<Body>, ApiError> {
        let body: UsageBody = json_body(request)?;
        let user = user_id(given(&body.user_id, "user_id")?)?;
        let feature = given(&body.feature, "feature")?;
        if !crate::plan::is_name(feature) {
            return Err(ApiError::bad_request(
                "`feature` must be a limit's name: 1 to 64 letters, digits, _, - and .",
            ));
        }
        let amount = whole_number(&body.amount, "amount", MAX_USAGE_AMOUNT)?;
        let key = given(&body.idempotency_key, "idempotency_key")?;
        if !printable(key, 128) {
            return Err(ApiError::bad_request(
                "`idempotency_key` must be 1 to 128 printable ASCII characters",
            ));
        }
        let now = self.clock.now();
        let account = self.store.get_account(&user).await?;
        let standing = Standing::of(&account, &self.catalog, now);
        let period = standing.period.as_ref().map_or("none", |p| p.key.as_str());
        let usage = UsageRequest {
            user: &user,
            limit: feature,
            amount,
            idempotency_key: key,
            period,
            allowed: standing.limit(&self.catalog, feature),
        };
        // The account query read the counter too (strongly consistent): the usage
        // transaction decides on it, without reading it again.
        let seen = account.usage.get(feature).cloned();
        let answer = match self.store.consume_usage(&usage, seen, &self.clock).await {
            Ok(answer) => answer,
            Err(UsageError::KeyReused(first)) => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "idempotency_key_reused",
                    format!(
                        "this idempotency_key was first used for another request ({first}); \
                         use a new key for a new request"
                    ),
                ));
            }
            Err(UsageError::Store(err)) => return Err(err.into()),
        };
        let mut response = json_response(
            StatusCode::OK,
            &json!({"allowed": answer.allowed, "remaining": answer.remaining}),
        );
        if answer.replayed {
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        Ok(response)
    }

    async fn user(&self, request: &Request, user: &UserId) -> Result<Response<Body>, ApiError> {
        let query = |name: &str| {
            request.uri().query().and_then(|q| {
                q.split('&').find_map(|pair| {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (key == name).then(|| percent_decode(&value.replace('+', " ")))?
                })
            })
        };
        let limit = match query("limit") {
            None => DEFAULT_AUDIT_PAGE,
            Some(raw) => raw
                .parse()
                .ok()
                .filter(|l| (1..=MAX_AUDIT_PAGE).contains(l))
                .ok_or_else(|| {
                    ApiError::bad_request(format!("`limit` must be 1 to {MAX_AUDIT_PAGE}"))
                })?,
        };
        let now = self.clock.now();
        let account = self.store.get_account(user).await?;
        let audit = self
            .store
            .audit_page(user, query("cursor").as_deref(), limit)
            .await?
            .ok_or_else(|| {
                ApiError::bad_request(
                    "`cursor` is not one this user's audit trail gave (use `next_cursor` as answered)",
                )
            })?;
        let subscriptions: Vec<_> = account
            .subscriptions
            .iter()
            .map(|s| {
                json!({
                    "subscription_id": s.subscription_id,
                    "status": s.status.as_str(),
                    "plan": s.plan,
                    "next_billing_date": s.next_billing_date,
                    "cancel_at_next_billing_date": s.cancel_at_next_billing_date,
                    "access_until": s.access_until(),
                })
            })
            .collect();
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "user_id": user.as_str(),
                "entitlements": Entitlements::of(&account, &self.catalog, now),
                "status": AccessView::of(&account, &self.catalog, now),
                "subscriptions": subscriptions,
                "grant": account.grant,
                "audit": audit,
            }),
        ))
    }

    async fn grant(
        &self,
        request: &Request,
        caller: &ServerCaller,
        user: &UserId,
    ) -> Result<Response<Body>, ApiError> {
        let body: GrantBody = json_body(request)?;
        let plan = given(&body.plan, "plan")?;
        if self.catalog.get(plan).is_none() {
            return Err(ApiError::bad_request(
                if plan == FREE_PLAN && self.catalog.free_tier().is_some() {
                    format!(
                        "`plan`: `{plan}` is the free tier, which every user has; it is not grantable"
                    )
                } else {
                    format!("`plan`: `{plan}` is not a plan in the catalogue")
                },
            ));
        }
        let days = whole_number(&body.days, "days", u64::from(MAX_GRANT_DAYS))? as u32;
        let reason = reason_text(given(&body.reason, "reason")?)?;
        if reason.is_empty() {
            return Err(ApiError::bad_request("`reason` must not be empty"));
        }
        let now_millis = self.clock.now_millis();
        let now = self.clock.now();
        let grant = ServerGrant {
            plan: plan.to_owned(),
            from: now,
            until: now.plus_days(days),
            reason: reason.clone(),
            by: caller.identity.clone(),
        };
        let account = self.store.get_account(user).await?;
        let seen_rev = account.access_rev;
        let before = Entitlements::of(&account, &self.catalog, now);
        let after = Entitlements::of(
            &crate::store::Account {
                grant: Some(grant.clone()),
                ..account
            },
            &self.catalog,
            now,
        );
        let action = action_id(request, now_millis);
        let event = access_event(user, &before, &after, &Trigger::ServerGrant, "server", now);
        let audit = AuditEntry {
            webhook_id: action,
            event_type: "server.grant".to_owned(),
            effect: "granted".to_owned(),
            object_id: plan.to_owned(),
            at: now,
            actor: Some(caller.identity.clone()),
            reason: Some(reason),
        };
        self.store
            .put_server_grant(user, &grant, &audit, event.as_ref(), seen_rev)
            .await?;
        Ok(json_response(
            StatusCode::OK,
            &json!({"grant": grant, "entitlements": after}),
        ))
    }

    async fn revoke(
        &self,
        request: &Request,
        caller: &ServerCaller,
        user: &UserId,
    ) -> Result<Response<Body>, ApiError> {
        let body: RevokeBody = json_body(request)?;
        let reason = match body.reason.as_deref() {
            Some(reason) if !reason.trim().is_empty() => reason_text(reason)?,
            Some(reason) => {
                reason_text(reason)?;
                "taken back".to_owned()
            }
            None => "taken back".to_owned(),
        };
        let now_millis = self.clock.now_millis();
        let now = self.clock.now();
        let account = self.store.get_account(user).await?;
        let Some(grant) = account.grant.clone() else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no_grant",
                "this user has no grant to take back",
            ));
        };
        let seen_rev = account.access_rev;
        let before = Entitlements::of(&account, &self.catalog, now);
        let after = Entitlements::of(
            &crate::store::Account {
                grant: None,
                ..account
            },
            &self.catalog,
            now,
        );
        let event = access_event(user, &before, &after, &Trigger::ServerRevoke, "server", now);
        let audit = AuditEntry {
            webhook_id: action_id(request, now_millis),
            event_type: "server.grant_revoked".to_owned(),
            effect: "revoked".to_owned(),
            object_id: grant.plan,
            at: now,
            actor: Some(caller.identity.clone()),
            reason: Some(reason),
        };
        if !self
            .store
            .remove_server_grant(user, &audit, event.as_ref(), seen_rev)
            .await?
        {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no_grant",
                "this user has no grant to take back",
            ));
        }
        Ok(json_response(
            StatusCode::OK,
            &json!({"revoked": true, "entitlements": after}),
        ))
    }
}

/// The audit id of a server action: the request id (to find its log line) and a random
/// part (an id is written once: two actions never share one).
fn action_id(request: &Request, now_millis: i64) -> String {
    use std::hash::{BuildHasher, RandomState};
    let unique = RandomState::new().hash_one(now_millis);
    match request_id(request) {
        Some(id) => format!("server_{id}_{unique:016x}"),
        None => format!("server_{now_millis}_{unique:016x}"),
    }
}

impl Handler for ServerHandler {
    async fn handle(&self, request: Request) -> Response<Body> {
        answer(&request, self.respond(&request)).await
    }
}
