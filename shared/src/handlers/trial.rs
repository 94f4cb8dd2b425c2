//! `POST /payment/trial {"plan": …}`: starts the plan's card-less trial at once, without
//! Dodo: the plan's features and limits until the trial ends (the hourly expiry sweep
//! then reports `trial_ended`; buying a plan before converts it). Once per person: the
//! user, and their verified e-mail normalised (see [`crate::trial::person_email`]).

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;

use super::portal::PortalHandler;
use super::user_limit;
use crate::access_events::access_event;
use crate::api::{ApiError, Caller, json_body, json_response};
use crate::entitlements::{Entitlements, Source};
use crate::store::{Account, StoreError, Trigger};
use crate::trial::CardlessTrial;

/// How often a trial start is tried when another write to the user gets in the way.
const ATTEMPTS: u32 = 4;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrialInput {
    plan: Option<String>,
}

impl PortalHandler {
    pub(super) async fn start_trial(
        &self,
        request: &Request,
        caller: &Caller,
    ) -> Result<Response<Body>, ApiError> {
        let input: TrialInput = json_body(request)?;
        let plan = self.named_plan(input.plan, "to try")?;
        let days = plan.cardless_trial_days().ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "trial_not_offered",
                match plan.card_trial_days() {
                    Some(_) => "this plan's trial takes a card: it starts with its checkout",
                    None => "this plan has no trial",
                },
            )
        })?;
        // One trial per person: an address they have not proved would let anyone try
        // again under a new account.
        let email = caller.verified_email().map(|e| e.as_str()).ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "email_not_verified",
                "a trial needs the signed-in user's verified e-mail address",
            )
        })?;
        user_limit(&self.store, &caller.user_id, &self.clock).await?;
        for _ in 0..ATTEMPTS {
            let now = self.clock.now();
            let account = self.store.get_account(&caller.user_id).await?;
            refuse_when_paid(&account, &self.catalog, &plan.name, now)?;
            if account.trial.as_ref().is_some_and(|t| t.plan == plan.name) {
                return Err(trial_used());
            }
            let trial = CardlessTrial {
                plan: plan.name.clone(),
                from: now,
                until: now.plus_days(days),
            };
            let before = Entitlements::of(&account, &self.catalog, now);
            let after = Entitlements::of(
                &Account {
                    trial: Some(trial.clone()),
                    ..account.clone()
                },
                &self.catalog,
                now,
            );
            let event = access_event(
                &caller.user_id,
                &before,
                &after,
                &Trigger::Payment,
                "user",
                now,
            );
            let audit = self.audit(request, caller, "user.trial", "trial_started", &plan.name);
            match self
                .store
                .start_cardless_trial(
                    &caller.user_id,
                    Some(email),
                    &trial,
                    &audit,
                    event.as_ref(),
                    account.access_rev,
                )
                .await
            {
                Ok(Ok(())) => {
                    tracing::info!(user_id = %caller.user_id, plan = %plan.name, days, "card-less trial started");
                    let status = self.status_of(&caller.user_id).await?;
                    return Ok(json_response(StatusCode::CREATED, &status));
                }
                Ok(Err(_)) => return Err(trial_used()),
                Err(StoreError::Contention) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(StoreError::Contention.into())
    }
}

fn trial_used() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "trial_used",
        "this user (or this e-mail address) has already had a trial of this plan",
    )
}

/// A trial is for someone who has not paid for the plan: one who has it (or another
/// paid plan running, or a grant) is refused, so a trial never masks what they have.
fn refuse_when_paid(
    account: &Account,
    catalog: &crate::plan::Catalog,
    plan: &str,
    now: crate::time::Timestamp,
) -> Result<(), ApiError> {
    let standing = crate::entitlements::Standing::of(account, catalog, now);
    match standing.source {
        // A grant from the founder too: a trial would hide it, and its end would read as
        // a conversion.
        Some(Source::Pass | Source::Subscription | Source::Grant) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_paid",
            format!(
                "the signed-in user already has a plan running ({}); a trial of `{plan}` would hide it",
                standing.plan.unwrap_or_default()
            ),
        )),
        _ => Ok(()),
    }
}
