//! Checkouts: which user opened a session, and the user's pending checkout.
//!
//! Items: `CHECKOUT#{session_id}` / `SESSION` (the session -> user link), and on the
//! profile the open checkout (`checkout_session_id`, `checkout_plan`,
//! `checkout_created_at`, `checkout_url`), its place in the due index (reconcile asks
//! Dodo about it an hour after it opened), and `checkout_opening` while a checkout is
//! being opened (so a double click opens one, not two).

use super::*;

/// How long after a checkout opens, unpaid, the reconcile function asks Dodo about it.
pub const CHECKOUT_RECHECK_AFTER: i64 = 3600;
/// How long the session -> user link outlives the checkout (Dodo retries a webhook for
/// about a day; a buyer may pay a session hours after opening it).
const CHECKOUT_LINK_DAYS: i64 = 90;
/// A checkout being opened blocks another for at most this long (a crashed opener must
/// not block the user for good). Longer than a request may take (it answers by itself at
/// 25 s), so the lock never passes to a second request while the first still works.
pub const OPENING_LOCK_SECONDS: i64 = 30;

/// A checkout the user opened and has not (yet) paid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingCheckout {
    pub session_id: String,
    pub plan: String,
    pub created_at: Timestamp,
    /// Dodo's hosted page for it, so that it can be handed out again.
    pub checkout_url: Option<String>,
}

/// The profile attributes of an open checkout, and its place in the due index.
pub(super) const CHECKOUT_FIELDS: &str = "checkout_session_id, checkout_plan, checkout_created_at, \
                               checkout_url, due_bucket, due_at, due_attempts";

impl Store {
    /// Takes the user's "opening a checkout" lock. `false`: another request of the same
    /// user is opening one right now (a double click); wait for its result instead.
    pub async fn begin_checkout(&self, user: &UserId, now: Timestamp) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(user_key(user)))
            .update_expression(
                "SET user_id = :user, checkout_opening = :now, version = if_not_exists(version, :zero)",
            )
            .condition_expression(
                "attribute_not_exists(checkout_opening) OR checkout_opening < :stale",
            )
            .set_expression_attribute_values(Some(values([
                (":user", s(user.as_str())),
                (":now", n(now.unix_seconds())),
                (":stale", n(now.unix_seconds() - OPENING_LOCK_SECONDS)),
                (":zero", n(0)),
            ])))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err) if is_condition_failed(&err) => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    /// Releases the lock after a checkout could not be opened. A profile that holds
    /// nothing but the lock (a first checkout that failed) is removed, so that a failed
    /// attempt leaves no trace.
    pub async fn abandon_checkout_attempt(&self, user: &UserId) -> Result<(), StoreError> {
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(user_key(user)))
            .condition_expression(format!(
                "version = :zero AND attribute_not_exists({}) AND attribute_not_exists(checkout_session_id) \
                 AND attribute_not_exists(paid_until) AND attribute_not_exists(email)",
                super::customers::BOUND_CUSTOMER
            ))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        match deleted {
            Ok(_) => return Ok(()),
            Err(err) if is_condition_failed(&err) => {}
            Err(err) => return Err(err.into()),
        }
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(user_key(user)))
            .update_expression("REMOVE checkout_opening")
            .condition_expression("attribute_exists(pk)")
            .send()
            .await;
        unless_condition_failed(result)
    }

    /// Drops a checkout that was never paid (the buyer walked away or was declined): it
    /// is no longer checked, and no longer the user's pending checkout, so their status
    /// stops saying `pending` (W4). The session -> user link stays, so a payment of it
    /// that still arrives is the user's.
    pub async fn forget_pending_checkout(
        &self,
        user: &UserId,
        session_id: &str,
    ) -> Result<(), StoreError> {
        self.clear_checkout(user, session_id, CHECKOUT_FIELDS).await
    }

    /// A purchase completed the user's open checkout `session_id`: it is no longer
    /// pending, and leaves the due index. (A pass's grant does this in its own
    /// transaction; a subscription's payment does it here.)
    pub async fn complete_checkout(
        &self,
        user: &UserId,
        session_id: &str,
    ) -> Result<(), StoreError> {
        self.clear_checkout(user, session_id, CHECKOUT_FIELDS).await
    }

    /// Removes `fields` from the profile if `session_id` is still its open checkout: a
    /// newer checkout or a payment changed it meanwhile, and nothing of this one is left.
    async fn clear_checkout(
        &self,
        user: &UserId,
        session_id: &str,
        fields: &str,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(user_key(user)))
            .update_expression(format!("REMOVE {fields}"))
            .condition_expression("checkout_session_id = :session")
            .expression_attribute_values(":session", s(session_id))
            .send()
            .await;
        unless_condition_failed(result)
    }

    /// Which user opened a checkout session, if we opened it.
    pub async fn checkout_owner(&self, session_id: &str) -> Result<Option<UserId>, StoreError> {
        self.get(checkout_key(session_id))
            .await?
            .as_ref()
            .map(get_user_id)
            .transpose()
    }

    /// Records an opened checkout: the session -> user link and the user's pending state,
    /// in one transaction, releasing the opening lock. `verified_email` feeds the e-mail
    /// index (the last way to link a payment), so only a verified address is stored.
    pub async fn record_checkout(
        &self,
        user: &UserId,
        verified_email: Option<&Email>,
        checkout: &PendingCheckout,
    ) -> Result<(), StoreError> {
        let link = Put::builder()
            .table_name(&self.table)
            .set_item(Some({
                let mut item = checkout_key(&checkout.session_id);
                item.extend(values([
                    ("user_id", s(user.as_str())),
                    ("plan", s(&checkout.plan)),
                    ("created_at", n(checkout.created_at.unix_seconds())),
                    (
                        "expires_at",
                        n(checkout.created_at.unix_seconds()
                            + CHECKOUT_LINK_DAYS * SECONDS_PER_DAY),
                    ),
                ]));
                item
            }))
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;

        let mut expression = String::from(
            "SET user_id = :user, checkout_session_id = :session, checkout_plan = :plan, \
             checkout_created_at = :created, version = if_not_exists(version, :zero), \
             due_bucket = :due, due_at = :due_at, due_attempts = :zero",
        );
        let mut attribute_values = values([
            (":user", s(user.as_str())),
            (":session", s(&checkout.session_id)),
            (":plan", s(&checkout.plan)),
            (":created", n(checkout.created_at.unix_seconds())),
            (":zero", n(0)),
            (":due", s(DUE_BUCKET)),
            (
                ":due_at",
                n(checkout.created_at.unix_seconds() + CHECKOUT_RECHECK_AFTER),
            ),
        ]);
        if let Some(url) = &checkout.checkout_url {
            expression.push_str(", checkout_url = :url");
            attribute_values.insert(":url".to_owned(), s(url));
        }
        if let Some(email) = verified_email {
            expression.push_str(", email = :email");
            attribute_values.insert(":email".to_owned(), s(email.as_str()));
        }
        expression.push_str(" REMOVE checkout_opening");
        // An e-mail no longer verified (or gone from the token) links nothing any more.
        if verified_email.is_none() {
            expression.push_str(", email");
        }
        let pending = Update::builder()
            .table_name(&self.table)
            .set_key(Some(user_key(user)))
            .update_expression(expression)
            .set_expression_attribute_values(Some(attribute_values))
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;

        self.client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(link).build())
            .transact_items(TransactWriteItem::builder().update(pending).build())
            .send()
            .await?;
        Ok(())
    }
}
