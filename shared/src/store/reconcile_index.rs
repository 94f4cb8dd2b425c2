//! The sparse due index: what the hourly reconcile checks with Dodo.
//!
//! An item is in the index while it has `due_bucket` (always `due`) and `due_at` (unix
//! seconds): a subscription set to renew (due at its renewal), one on hold (due a few
//! hours later), a checkout left unpaid (due an hour after it opened). An item leaves the
//! index once nothing is left to check (the checkout was paid or abandoned, the
//! subscription ended or stopped renewing). A check that changes nothing, or fails,
//! defers the item (`due_at` later, `due_attempts` + 1), so that items that keep failing
//! fall behind the others instead of starving them.

use super::*;

/// Something the reconcile function checks with Dodo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueItem {
    pub what: Due,
    /// When it fell due, as read (a deferral applies only if nobody moved it since).
    pub due_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Due {
    /// A subscription due to renew, or on hold.
    Subscription {
        user: UserId,
        subscription_id: String,
        plan: String,
    },
    /// A checkout still pending an hour after it opened.
    Checkout {
        user: UserId,
        session_id: String,
        created_at: Timestamp,
    },
}

/// One page of the due index.
#[derive(Debug, Default)]
pub struct DuePage {
    pub items: Vec<DueItem>,
    /// Where the next page starts; `None` at the end.
    pub next: Option<Item>,
}

fn due_item(item: &Item) -> Option<Result<DueItem, StoreError>> {
    let user = get_s(item, "pk")?.strip_prefix("USER#")?;
    let user = match UserId::parse(user) {
        Ok(user) => user,
        Err(e) => return Some(Err(StoreError::Corrupt(e.to_string()))),
    };
    let due_at = get_time(item, "due_at").ok().flatten()?;
    let sk = get_s(item, "sk")?;
    let what = if let Some(id) = sk.strip_prefix(SUBSCRIPTION_PREFIX) {
        Due::Subscription {
            user,
            subscription_id: id.to_owned(),
            plan: get_s(item, "plan").unwrap_or_default().to_owned(),
        }
    } else {
        Due::Checkout {
            user,
            session_id: get_s(item, "checkout_session_id")?.to_owned(),
            created_at: get_time(item, "checkout_created_at").ok().flatten()?,
        }
    };
    Some(Ok(DueItem { what, due_at }))
}

impl Store {
    /// One page of what is due by `until`, oldest first, starting at `start` (the `next`
    /// of the page before).
    pub async fn due_page(
        &self,
        until: Timestamp,
        start: Option<Item>,
    ) -> Result<DuePage, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(DUE_INDEX)
            .key_condition_expression("due_bucket = :due AND due_at <= :until")
            .expression_attribute_values(":due", s(DUE_BUCKET))
            .expression_attribute_values(":until", n(until.unix_seconds()))
            .set_exclusive_start_key(start)
            .send()
            .await?;
        let items = output
            .items()
            .iter()
            .filter_map(due_item)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DuePage {
            items,
            next: output.last_evaluated_key.filter(|key| !key.is_empty()),
        })
    }

    /// Everything due by `until`, every page, oldest first.
    pub async fn due_for_reconcile(&self, until: Timestamp) -> Result<Vec<DueItem>, StoreError> {
        let mut all = Vec::new();
        let mut start = None;
        loop {
            let page = self.due_page(until, start).await?;
            all.extend(page.items);
            match page.next {
                Some(next) => start = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// Checks of an item so far that changed nothing or failed. Read from the item
    /// itself: the due index projects only what a run needs to start (see template.yaml).
    pub async fn due_attempts(&self, item: &DueItem) -> Result<u32, StoreError> {
        Ok(self
            .get(due_key(item))
            .await?
            .as_ref()
            .map(|stored| get_n(stored, "due_attempts"))
            .transpose()?
            .flatten()
            .unwrap_or(0)
            .clamp(0, i64::from(u32::MAX)) as u32)
    }

    /// Moves an item to `until` and records `attempts`, unless something else moved it
    /// since it was read (a webhook applied a newer state: that state's due time stands).
    pub async fn defer_due(
        &self,
        item: &DueItem,
        until: Timestamp,
        attempts: u32,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(due_key(item)))
            .update_expression("SET due_at = :until, due_attempts = :attempts")
            .condition_expression("due_at = :seen")
            .set_expression_attribute_values(Some(values([
                (":until", n(until.unix_seconds())),
                (":attempts", n(i64::from(attempts))),
                (":seen", n(item.due_at.unix_seconds())),
            ])))
            .send()
            .await;
        unless_condition_failed(result)
    }

    /// Takes an item out of the index for good (Dodo does not know it, or it kept
    /// failing), unless something else moved it since it was read.
    pub async fn drop_due(&self, item: &DueItem) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(due_key(item)))
            .update_expression("REMOVE due_bucket, due_at, due_attempts")
            .condition_expression("due_at = :seen")
            .expression_attribute_values(":seen", n(item.due_at.unix_seconds()))
            .send()
            .await;
        unless_condition_failed(result)
    }
}

fn due_key(item: &DueItem) -> Item {
    match &item.what {
        Due::Subscription {
            user,
            subscription_id,
            ..
        } => subscription_key(user, subscription_id),
        Due::Checkout { user, .. } => user_key(user),
    }
}
