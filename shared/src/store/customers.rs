//! Dodo customers, bound one to one to users.
//!
//! A user's Dodo customer is the one the paywall created for that user (`POST /customers`
//! on their first checkout), never one taken from a payment: Dodo attaches a checkout that
//! names only an e-mail to any existing customer with that e-mail, so two accounts sharing
//! an address would otherwise share a customer, its portal and its subscriptions.
//!
//! Items: the profile's `bound_customer_id`, and `CUSTOMER#{id}` / `OWNER` (which user a
//! customer belongs to). Both are written once, in one transaction, each on the condition
//! that it is not set yet, so neither a user nor a customer is ever bound twice.

use super::*;

/// The profile attribute holding the bound customer. (Not `customer_id`: earlier versions
/// stored there whatever customer a payment named, which may be another user's.)
pub(super) const BOUND_CUSTOMER: &str = "bound_customer_id";

fn customer_key(customer_id: &str) -> Item {
    key(format!("CUSTOMER#{customer_id}"), OWNER)
}

impl Store {
    /// Which user a Dodo customer belongs to, if the paywall bound it.
    pub async fn customer_owner(&self, customer_id: &str) -> Result<Option<UserId>, StoreError> {
        self.get(customer_key(customer_id))
            .await?
            .as_ref()
            .map(get_user_id)
            .transpose()
    }

    /// Binds `customer_id` to `user` unless the user already has a customer. Returns the
    /// user's customer after the call: `customer_id`, or the one bound before (by a
    /// concurrent first checkout, say), which the caller must use instead.
    pub async fn bind_customer(
        &self,
        user: &UserId,
        customer_id: &str,
    ) -> Result<String, StoreError> {
        let build_error =
            |e: aws_sdk_dynamodb::error::BuildError| StoreError::Unavailable(e.to_string());
        let profile = Update::builder()
            .table_name(&self.table)
            .set_key(Some(user_key(user)))
            .update_expression(format!(
                "SET user_id = :user, {BOUND_CUSTOMER} = :customer, version = if_not_exists(version, :zero)"
            ))
            .condition_expression(format!("attribute_not_exists({BOUND_CUSTOMER})"))
            .set_expression_attribute_values(Some(values([
                (":user", s(user.as_str())),
                (":customer", s(customer_id)),
                (":zero", n(0)),
            ])))
            .build()
            .map_err(build_error)?;
        let mut owner = customer_key(customer_id);
        owner.insert("user_id".to_owned(), s(user.as_str()));
        let owner = Put::builder()
            .table_name(&self.table)
            .set_item(Some(owner))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(build_error)?;
        for attempt in 0..MAX_GRANT_ATTEMPTS {
            let result = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().update(profile.clone()).build())
                .transact_items(TransactWriteItem::builder().put(owner.clone()).build())
                .send()
                .await;
            match conflict_of(result) {
                Ok(()) => return Ok(customer_id.to_owned()),
                Err(WriteConflict::Cancelled) => {
                    // Bound before (by a concurrent first checkout): that one stands.
                    if let Some(bound) = self.get_user(user).await?.and_then(|p| p.customer_id) {
                        return Ok(bound);
                    }
                    // The customer is someone else's: Dodo answered a new customer with
                    // one we bound before. Never hand it to this user.
                    if self
                        .customer_owner(customer_id)
                        .await?
                        .is_some_and(|owner| &owner != user)
                    {
                        return Err(StoreError::Corrupt(format!(
                            "Dodo customer {customer_id} is already bound to another user"
                        )));
                    }
                    // A conflicting write in flight: try again.
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(WriteConflict::Failed(err)) => return Err(err),
            }
        }
        Err(StoreError::Contention)
    }
}
