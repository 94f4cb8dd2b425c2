//! The rules that decide whether a payment Dodo reports buys access, and for whom.
//! Shared by the success call and the webhook, so both paths grant the same way.

use crate::dodo::Payment;
use crate::ids::{Email, UserId};
use crate::plan::{Catalog, Plan};
use crate::store::{Store, StoreError};
use crate::subscription::Subscription;

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

/// The subscription plan a subscription belongs to: the plan named in our metadata, else
/// the plan selling its product, else (when Dodo did not say) the only subscription plan.
pub fn subscription_plan_for<'c>(
    catalog: &'c Catalog,
    subscription: &Subscription,
) -> Option<&'c Plan> {
    let named = subscription
        .metadata
        .get(PLAN_KEY)
        .and_then(|name| catalog.get(name))
        .filter(|plan| plan.is_subscription());
    let by_product = subscription
        .product_id
        .as_deref()
        .and_then(|id| catalog.by_product(id))
        .filter(|plan| plan.is_subscription());
    match (named, by_product, &subscription.product_id) {
        (Some(plan), _, None) => Some(plan),
        (Some(plan), Some(_), Some(product)) if plan.product_id.as_str() == product => Some(plan),
        (_, Some(plan), Some(_)) => Some(plan),
        (None, None, None) => {
            let mut subscriptions = catalog.plans().iter().filter(|p| p.is_subscription());
            match (subscriptions.next(), subscriptions.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Who a subscription belongs to: our metadata, then the user it was linked to (by an
/// earlier event or its payment), then the user of its Dodo customer, then (webhooks
/// only) the one user with its customer e-mail.
pub async fn subscription_owner_of(
    store: &Store,
    subscription: &Subscription,
    linking: Linking,
) -> Result<Option<UserId>, StoreError> {
    if let Some(user) = metadata_user(&subscription.metadata) {
        return Ok(Some(user));
    }
    if let Some(user) = store
        .subscription_owner(&subscription.subscription_id)
        .await?
    {
        return Ok(Some(user));
    }
    if let Some(customer) = &subscription.customer_id
        && let Some(user) = store.customer_owner(customer).await?
    {
        return Ok(Some(user));
    }
    unique_user_by_email(store, subscription.customer_email.as_deref(), linking).await
}

async fn unique_user_by_email(
    store: &Store,
    email: Option<&str>,
    linking: Linking,
) -> Result<Option<UserId>, StoreError> {
    if linking != Linking::AllowEmail {
        return Ok(None);
    }
    let Some(email) = email.and_then(|raw| Email::parse(raw).ok()) else {
        return Ok(None);
    };
    let users = store.users_by_email(&email).await?;
    Ok(match users.as_slice() {
        [only] => Some(only.clone()),
        _ => None,
    })
}

/// The user our checkout named in an object's metadata.
pub fn metadata_user(metadata: &std::collections::BTreeMap<String, String>) -> Option<UserId> {
    metadata
        .get(USER_ID_KEY)
        .and_then(|raw| UserId::parse(raw).ok())
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
    if let Some(user) = metadata_user(&payment.metadata) {
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
    if let Some(subscription) = &payment.subscription_id
        && let Some(user) = store.subscription_owner(subscription).await?
    {
        return Ok(Some(user));
    }
    unique_user_by_email(store, payment.customer_email.as_deref(), linking).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dodo::PaymentStatus;
    use crate::ids::ProductId;
    use std::collections::BTreeMap;

    fn catalog() -> Catalog {
        Catalog::single(Plan::pass(
            "monthly",
            ProductId::parse("pdt_ours").expect("valid"),
            30,
        ))
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
