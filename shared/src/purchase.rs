//! The rules that decide whether a payment Dodo reports buys access, and for whom.
//! Shared by the success call and the webhook, so both paths grant the same way.

use crate::dodo::Payment;
use crate::ids::{Email, UserId};
use crate::plan::{Catalog, Plan};
use crate::store::{Store, StoreError};

/// The metadata key our checkout sets to the buyer's user id (server-side, from the JWT).
pub const USER_ID_KEY: &str = "user_id";
/// The metadata key our checkout sets to the plan bought.
pub const PLAN_KEY: &str = "plan";
/// The metadata key for the analytics visitor id the frontend may pass along.
pub const DATAFAST_VISITOR_KEY: &str = "datafast_visitor_id";

/// The plan a payment bought, or `None` when it is not a purchase of ours (another
/// product of the same business must never unlock the paywall).
pub fn plan_for<'c>(catalog: &'c Catalog, payment: &Payment) -> Option<&'c Plan> {
    let sells = |plan: &Plan| {
        payment.product_ids.is_empty()
            || payment
                .product_ids
                .iter()
                .any(|id| id == plan.product_id.as_str())
    };
    if let Some(plan) = payment
        .metadata
        .get(PLAN_KEY)
        .and_then(|name| catalog.get(name))
    {
        return sells(plan).then_some(plan);
    }
    if payment.product_ids.is_empty() {
        return Some(catalog.default_plan());
    }
    payment
        .product_ids
        .iter()
        .find_map(|id| catalog.by_product(id))
}

/// How far to look for a payment's owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Linking {
    /// Only links we created: our metadata, our checkout session, an earlier grant.
    /// Used when a caller claims a payment.
    Strict,
    /// Also a unique user with the payment's customer e-mail, as a last resort for
    /// signed webhooks.
    AllowEmail,
}

/// Who a payment belongs to: the user id in our metadata, then the user who opened its
/// checkout session, then the user it was already granted to, then (webhooks only) the
/// one user with its customer e-mail.
pub async fn owner_of(
    store: &Store,
    payment: &Payment,
    linking: Linking,
) -> Result<Option<UserId>, StoreError> {
    if let Some(user) = payment
        .metadata
        .get(USER_ID_KEY)
        .and_then(|raw| UserId::parse(raw).ok())
    {
        return Ok(Some(user));
    }
    if let Some(session) = &payment.checkout_session_id
        && let Some(user) = store.checkout_owner(session).await?
    {
        return Ok(Some(user));
    }
    if let Some(grant) = store.payment_grant(&payment.payment_id).await? {
        return Ok(Some(grant.user_id));
    }
    if linking == Linking::AllowEmail
        && let Some(email) = payment
            .customer_email
            .as_deref()
            .and_then(|raw| Email::parse(raw).ok())
    {
        let users = store.users_by_email(&email).await?;
        if let [only] = users.as_slice() {
            return Ok(Some(only.clone()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dodo::PaymentStatus;
    use crate::ids::ProductId;
    use std::collections::BTreeMap;

    fn catalog() -> Catalog {
        Catalog::single(Plan {
            name: "monthly".into(),
            product_id: ProductId::parse("pdt_ours").expect("valid"),
            days: 30,
        })
    }

    fn payment(products: &[&str], metadata: &[(&str, &str)]) -> Payment {
        Payment {
            payment_id: "pay_1".into(),
            status: PaymentStatus::Succeeded,
            metadata: metadata
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            customer_email: None,
            customer_id: None,
            checkout_session_id: None,
            subscription_id: None,
            product_ids: products.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    #[test]
    fn another_product_buys_nothing() {
        let catalog = catalog();
        assert_eq!(plan_for(&catalog, &payment(&["pdt_other"], &[])), None);
        assert_eq!(
            plan_for(&catalog, &payment(&["pdt_other"], &[("plan", "monthly")])),
            None
        );
    }

    #[test]
    fn our_product_or_our_metadata_buys_the_plan() {
        let catalog = catalog();
        let monthly = Some(catalog.default_plan());
        assert_eq!(plan_for(&catalog, &payment(&["pdt_ours"], &[])), monthly);
        assert_eq!(
            plan_for(&catalog, &payment(&[], &[("plan", "monthly")])),
            monthly
        );
        assert_eq!(plan_for(&catalog, &payment(&[], &[])), monthly);
    }
}
