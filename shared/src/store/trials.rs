//! Trials: who had one of which plan (`TRIAL#{plan}` / `USER#{sub}` and
//! `TRIAL#{plan}` / `EMAIL#{person}`), and a user's running card-less trial
//! (`USER#{sub}` / `TRIAL`, read with the account).
//!
//! A claim is `offered` when a checkout with Dodo's trial was opened for the user (the
//! same user may be offered it again, say after abandoning that checkout; no one else
//! with the e-mail may) and `started` once a trial began (then no one, the user
//! included, gets another of that plan).

use super::*;
use crate::trial::{CardlessTrial, person_email};

pub(super) const CARDLESS_TRIAL: &str = "TRIAL";
const OFFERED: &str = "offered";
const STARTED: &str = "started";

/// The claims that stand for one person's trial of `plan`: the user's, and each of
/// their e-mails' (verified ones; once each, as one transaction may not name an item
/// twice).
fn claim_keys<'e>(
    plan: &str,
    user: &UserId,
    emails: impl IntoIterator<Item = &'e str>,
) -> Vec<Item> {
    let mut people: Vec<String> = emails.into_iter().map(person_email).collect();
    people.sort();
    people.dedup();
    std::iter::once(format!("USER#{user}"))
        .chain(people.into_iter().map(|person| format!("EMAIL#{person}")))
        .map(|sort_key| key(format!("TRIAL#{plan}"), &sort_key))
        .collect()
}

pub(super) fn cardless_trial_from_item(item: &Item) -> Result<CardlessTrial, StoreError> {
    let time = |name| {
        get_time(item, name)?.ok_or_else(|| StoreError::Corrupt(format!("trial without {name}")))
    };
    Ok(CardlessTrial {
        plan: get_s(item, "plan").unwrap_or_default().to_owned(),
        from: time("trial_from")?,
        until: time("trial_until")?,
    })
}

/// Why a trial could not start.
#[derive(Debug, PartialEq, Eq)]
pub enum TrialRefused {
    /// This user, or someone with their e-mail, has had a trial of the plan.
    AlreadyHad,
}

impl Store {
    /// Whether `user` (and their verified `email`) may still have a trial of `plan`: no
    /// claim of either has started, and no other user was offered the e-mail's.
    pub async fn trial_available(
        &self,
        plan: &str,
        user: &UserId,
        email: Option<&str>,
    ) -> Result<bool, StoreError> {
        for claim in claim_keys(plan, user, email) {
            if let Some(item) = self.get(claim).await? {
                let mine = get_s(&item, "user_id") == Some(user.as_str());
                if get_s(&item, "trial_state") != Some(OFFERED) || !mine {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Marks `plan`'s trial as offered to `user` (a checkout with Dodo's trial is about to
    /// open); `false` when it is not theirs to take (someone had it, or has it on offer).
    pub async fn offer_trial(
        &self,
        plan: &str,
        user: &UserId,
        email: Option<&str>,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut transaction = self.client.transact_write_items();
        let emails: Vec<&str> = email.into_iter().collect();
        for claim in self.claim_puts(plan, user, &emails, OFFERED, now, true)? {
            transaction = transaction.transact_items(claim);
        }
        match conflict_of(transaction.send().await) {
            Ok(()) => Ok(true),
            Err(WriteConflict::Cancelled) => Ok(false),
            Err(WriteConflict::Failed(err)) => Err(err),
        }
    }

    /// Puts of the claims of `plan`'s trial for `user` in `state`. `guarded`: only where
    /// no one had it and no one else has it on offer (a trial starting now); unguarded:
    /// recording a trial Dodo has already started (it happened, whatever was offered).
    pub(super) fn claim_puts(
        &self,
        plan: &str,
        user: &UserId,
        emails: &[&str],
        state: &str,
        now: Timestamp,
        guarded: bool,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        claim_keys(plan, user, emails.iter().copied())
            .into_iter()
            .map(|mut item| {
                item.extend(values([
                    ("user_id", s(user.as_str())),
                    ("plan", s(plan)),
                    ("trial_state", s(state)),
                    ("at", n(now.unix_seconds())),
                ]));
                let mut put = Put::builder().table_name(&self.table).set_item(Some(item));
                if guarded {
                    put = put
                        .condition_expression(
                            "attribute_not_exists(pk) OR (user_id = :user AND trial_state = :offered)",
                        )
                        .expression_attribute_values(":user", s(user.as_str()))
                        .expression_attribute_values(":offered", s(OFFERED));
                }
                let put = put
                    .build()
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                Ok(TransactWriteItem::builder().put(put).build())
            })
            .collect()
    }

    /// The claims of a trial Dodo has started (a subscription bought with one), for the
    /// transaction that records its state.
    pub(super) fn started_trial_puts(
        &self,
        plan: &str,
        user: &UserId,
        emails: &[&str],
        now: Timestamp,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        self.claim_puts(plan, user, emails, STARTED, now, false)
    }

    /// Starts a card-less trial for `user`, with its claims (refused if this person had
    /// one of the plan), audit entry and access event, computed from an account read at
    /// `seen_rev`.
    pub async fn start_cardless_trial(
        &self,
        user: &UserId,
        email: Option<&str>,
        trial: &CardlessTrial,
        audit: &AuditEntry,
        event: Option<&AccessEvent>,
        seen_rev: i64,
    ) -> Result<Result<(), TrialRefused>, StoreError> {
        let mut item = key(format!("USER#{user}"), CARDLESS_TRIAL);
        item.extend(values([
            ("user_id", s(user.as_str())),
            ("plan", s(&trial.plan)),
            ("trial_from", n(trial.from.unix_seconds())),
            ("trial_until", n(trial.until.unix_seconds())),
        ]));
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let mut transaction = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put).build())
            .transact_items(self.audit_put(user, audit)?)
            .with_items(self.claim_puts(
                &trial.plan,
                user,
                &email.into_iter().collect::<Vec<_>>(),
                STARTED,
                trial.from,
                true,
            )?);
        if let Some(event) = event {
            transaction = transaction.with_items(self.access_event_puts(event)?);
        }
        transaction = transaction.transact_items(self.access_rev_guard(user, seen_rev)?);
        match conflict_of(transaction.send().await) {
            Ok(()) => Ok(Ok(())),
            // A claim taken, or another write in the way (the caller retries): which?
            Err(WriteConflict::Cancelled) => {
                if self.trial_available(&trial.plan, user, email).await? {
                    Err(StoreError::Contention)
                } else {
                    Ok(Err(TrialRefused::AlreadyHad))
                }
            }
            Err(WriteConflict::Failed(err)) => Err(err),
        }
    }
}
