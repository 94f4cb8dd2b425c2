//! The rules that decide whether a payment Dodo reports buys access, and for whom.
//! Shared by the success call, the webhook and reconcile, so every path grants the same
//! way: [`what_payment_buys`] decides what, [`owner_of`] decides who, [`apply_payment`]
//! stores it.

use crate::dodo::Payment;
use crate::ids::{Email, UserId};
use crate::plan::{Catalog, Plan};
use crate::store::{Grant, GrantOutcome, GrantSource, Store, StoreError};
use crate::subscription::Subscription;
use crate::time::Timestamp;

/// The metadata key our checkout sets to the buyer's user id (server-side, from the JWT).
pub const USER_ID_KEY: &str = "user_id";
/// The metadata key our checkout sets to the plan bought.
pub const PLAN_KEY: &str = "plan";
/// The metadata key for the analytics visitor id the frontend may pass along.
pub const DATAFAST_VISITOR_KEY: &str = "datafast_visitor_id";

/// What a payment buys. Decided in one place, for the webhook, the success call and
/// reconcile alike, and only by the payment's own `product_cart` matched against the
/// catalogue: our metadata names the buyer, never what was bought.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Purchase<'c> {
    /// Days of a pass: `plan`'s days for each pass line we sell, times its quantity.
    Pass { plan: &'c Plan, days: u32 },
    /// A payment of a subscription: access follows the subscription, on the plan its
    /// product is sold as (none if it is not on a product we sell).
    Subscription { subscription_id: String },
    /// Nothing this paywall sells.
    Nothing(NothingBought),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NothingBought {
    /// A payment that only saved a new card for a subscription.
    UpdatePaymentMethod,
    /// No `product_cart`, or an empty one.
    EmptyCart,
    /// Products this paywall does not sell (another product of the same business).
    NotSold,
}

impl NothingBought {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UpdatePaymentMethod => "payment_method_update",
            Self::EmptyCart => "empty_cart",
            Self::NotSold => "not_sold",
        }
    }
}

/// The most days one payment may grant (ten years), whatever its quantities say.
const MAX_PASS_DAYS: u32 = 3660;

/// What `payment` bought from `catalog`. Fails closed: anything it cannot match buys
/// nothing.
pub fn what_payment_buys<'c>(catalog: &'c Catalog, payment: &Payment) -> Purchase<'c> {
    if payment.is_update_payment_method {
        return Purchase::Nothing(NothingBought::UpdatePaymentMethod);
    }
    let sold: Vec<(&Plan, u32)> = payment
        .product_cart
        .iter()
        .filter_map(|line| Some((catalog.by_product(&line.product_id)?, line.quantity)))
        .collect();
    if let Some(subscription_id) = &payment.subscription_id {
        // Dodo sends a `product_cart` with one-time payments only: a subscription's
        // payment buys what its subscription is on, which the subscription's own state
        // decides (see `subscription_plan_for`). A cart that is there must agree.
        let agrees =
            payment.product_cart.is_empty() || sold.iter().any(|(plan, _)| plan.is_subscription());
        return if agrees {
            Purchase::Subscription {
                subscription_id: subscription_id.clone(),
            }
        } else {
            Purchase::Nothing(NothingBought::NotSold)
        };
    }
    if payment.product_cart.is_empty() {
        return Purchase::Nothing(NothingBought::EmptyCart);
    }
    let passes: Vec<(&Plan, u32)> = sold
        .into_iter()
        .filter(|(plan, _)| !plan.is_subscription())
        .collect();
    // One payment grants one plan's time. The paywall's checkouts sell one product; a
    // cart of several pass plans (a link made elsewhere) is granted as the least of them,
    // so that no day is ever relabelled to a plan better than the one paid for (M1).
    let Some(plan) = passes
        .iter()
        .map(|(plan, _)| *plan)
        .min_by_key(|plan| catalog.rank(&plan.name))
    else {
        return Purchase::Nothing(NothingBought::NotSold);
    };
    let days = passes
        .iter()
        .map(|(plan, quantity)| u64::from(plan.days) * u64::from(*quantity))
        .sum::<u64>()
        .min(u64::from(MAX_PASS_DAYS)) as u32;
    Purchase::Pass { plan, days }
}

/// The plan a subscription is on: the subscription plan selling its product. `None` when
/// it is on a product this paywall does not sell (moved to another product, or another
/// product of the same business): it then stops granting at the end of the period paid.
/// Only when Dodo names no product at all do our metadata, then the only subscription
/// plan, say which.
pub fn subscription_plan_for<'c>(
    catalog: &'c Catalog,
    subscription: &Subscription,
) -> Option<&'c Plan> {
    match subscription.product_id.as_deref() {
        Some(product) => catalog.by_product(product).filter(|p| p.is_subscription()),
        None => {
            let named = subscription
                .metadata
                .get(PLAN_KEY)
                .and_then(|name| catalog.get(name))
                .filter(|plan| plan.is_subscription());
            named.or_else(|| {
                let mut subscriptions = catalog.plans().iter().filter(|p| p.is_subscription());
                match (subscriptions.next(), subscriptions.next()) {
                    (Some(only), None) => Some(only),
                    _ => None,
                }
            })
        }
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
    // As for payments (M2): a customer bound to a user speaks for a subscription that
    // nothing of ours names only if that user's verified e-mail is the subscription's.
    if let Some(customer) = &subscription.customer_id
        && let Some(user) = store.customer_owner(customer).await?
        && bound_user_paid(store, &user, subscription.customer_email.as_deref()).await?
    {
        return Ok(Some(user));
    }
    unique_user_by_email(
        store,
        subscription.customer_email.as_deref(),
        subscription.customer_id.as_deref(),
        linking,
    )
    .await
}

/// The one user whose verified e-mail (the only kind the profile keeps) is `email`,
/// unless they have a bound customer other than the payment's `customer_id`.
async fn unique_user_by_email(
    store: &Store,
    email: Option<&str>,
    customer_id: Option<&str>,
    linking: Linking,
) -> Result<Option<UserId>, StoreError> {
    if linking != Linking::AllowEmail {
        return Ok(None);
    }
    let Some(email) = email.and_then(|raw| Email::parse(raw).ok()) else {
        return Ok(None);
    };
    let users = store.users_by_email(&email).await?;
    let [only] = users.as_slice() else {
        return Ok(None);
    };
    let bound = store.get_user(only).await?.and_then(|p| p.customer_id);
    Ok(match (bound.as_deref(), customer_id) {
        (None, _) => Some(only.clone()),
        (Some(bound), Some(paid_by)) if bound == paid_by => Some(only.clone()),
        _ => None,
    })
}

/// Whether `user`, the holder of the customer Dodo attached an object to, is the one who
/// typed its e-mail: their verified e-mail is the object's, and no other user's is (two
/// accounts sharing an address would otherwise take each other's payments).
async fn bound_user_paid(
    store: &Store,
    user: &UserId,
    email: Option<&str>,
) -> Result<bool, StoreError> {
    let verified = store.get_user(user).await?.and_then(|p| p.email);
    let (Some(ours), Some(theirs)) = (verified.as_deref(), email) else {
        return Ok(false);
    };
    if !ours.eq_ignore_ascii_case(theirs.trim()) {
        return Ok(false);
    }
    let Ok(address) = Email::parse(theirs) else {
        return Ok(false);
    };
    Ok(store.users_by_email(&address).await?.as_slice() == std::slice::from_ref(user))
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
    /// Also the one user with the payment's customer e-mail (verified, and not bound to
    /// another customer), as a last resort for signed webhooks.
    AllowEmail,
}

/// Who a payment belongs to: the user id in our metadata, then the user who opened its
/// checkout session, then the user it was already granted to, then its subscription's
/// user, then the user its customer is bound to, then (webhooks only) the one user with
/// its customer e-mail.
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
    // Nothing of ours names this payment: it came through an e-mail-only flow (a payment
    // link, a dashboard link), and Dodo attached it to a customer by the e-mail typed in.
    // The user bound to that customer owns it only if their verified e-mail is that one
    // (issue 17, M2); otherwise it goes on to the e-mail rule, or to support.
    if let Some(customer) = &payment.customer_id
        && let Some(user) = store.customer_owner(customer).await?
        && bound_user_paid(store, &user, payment.customer_email.as_deref()).await?
    {
        return Ok(Some(user));
    }
    unique_user_by_email(
        store,
        payment.customer_email.as_deref(),
        payment.customer_id.as_deref(),
        linking,
    )
    .await
}

/// What applying a payment did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// A pass: the grant's outcome (applied now, before, or revoked).
    Pass(GrantOutcome),
    /// A subscription's payment, recorded; access follows the subscription's state.
    SubscriptionPayment { subscription_id: String },
    /// It bought nothing this paywall sells; nothing was stored.
    Nothing(NothingBought),
}

/// Applies a succeeded payment that belongs to `user`: the one path by which the webhook,
/// the success call and reconcile turn a payment into access, by [`what_payment_buys`].
pub async fn apply_payment(
    store: &Store,
    catalog: &Catalog,
    user: &UserId,
    payment: &Payment,
    source: GrantSource,
    now: Timestamp,
) -> Result<Applied, StoreError> {
    match what_payment_buys(catalog, payment) {
        Purchase::Nothing(why) => Ok(Applied::Nothing(why)),
        Purchase::Pass { plan, days } => {
            let grant = Grant {
                user_id: user.clone(),
                payment_id: payment.payment_id.clone(),
                plan: plan.name.clone(),
                days,
                source,
            };
            Ok(Applied::Pass(store.apply_grant(&grant, now).await?))
        }
        Purchase::Subscription { subscription_id } => {
            let paid_at = payment
                .created_at
                .unwrap_or_else(|| now.unix_seconds() * 1000);
            store
                .record_subscription_payment(
                    user,
                    &subscription_id,
                    &payment.payment_id,
                    paid_at,
                    payment.pays_period,
                )
                .await?;
            // The purchase completes the checkout it was made in: no longer pending, and
            // no longer due for reconcile.
            if let Some(session) = &payment.checkout_session_id {
                store.complete_checkout(user, session).await?;
            }
            Ok(Applied::SubscriptionPayment { subscription_id })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dodo::{CartItem, PaymentStatus};
    use crate::ids::ProductId;

    fn catalog() -> Catalog {
        let product = |id: &str| ProductId::parse(id).expect("valid");
        let pro = Plan::subscription("pro", product("pdt_pro"));
        Catalog::of(vec![
            Plan::pass("monthly", product("pdt_ours"), 30),
            Plan::pass("weekly", product("pdt_week"), 7),
            pro,
        ])
        .expect("plans")
    }

    fn payment(products: &[(&str, u32)], metadata: &[(&str, &str)]) -> Payment {
        Payment {
            payment_id: "pay_1".into(),
            status: PaymentStatus::Succeeded,
            metadata: metadata
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            customer_email: None,
            customer_id: None,
            checkout_session_id: None,
            subscription_id: None,
            product_cart: products
                .iter()
                .map(|(id, quantity)| CartItem {
                    product_id: (*id).to_owned(),
                    quantity: *quantity,
                })
                .collect(),
            is_update_payment_method: false,
            created_at: None,
            pays_period: true,
        }
    }

    #[test]
    fn another_product_or_an_empty_cart_buys_nothing() {
        let catalog = catalog();
        let nothing = |why| Purchase::Nothing(why);
        assert_eq!(
            what_payment_buys(&catalog, &payment(&[("pdt_other", 1)], &[])),
            nothing(NothingBought::NotSold)
        );
        // Our metadata never buys anything by itself.
        assert_eq!(
            what_payment_buys(
                &catalog,
                &payment(&[("pdt_other", 1)], &[("plan", "monthly")])
            ),
            nothing(NothingBought::NotSold)
        );
        assert_eq!(
            what_payment_buys(&catalog, &payment(&[], &[("plan", "monthly")])),
            nothing(NothingBought::EmptyCart)
        );
        let mut update = payment(&[("pdt_ours", 1)], &[]);
        update.is_update_payment_method = true;
        assert_eq!(
            what_payment_buys(&catalog, &update),
            nothing(NothingBought::UpdatePaymentMethod)
        );
        // A subscription plan's product paid outside a subscription is not a pass.
        assert_eq!(
            what_payment_buys(&catalog, &payment(&[("pdt_pro", 1)], &[])),
            nothing(NothingBought::NotSold)
        );
    }

    #[test]
    fn the_cart_decides_the_plan_and_the_days() {
        let catalog = catalog();
        let monthly = catalog.get("monthly").expect("monthly");
        assert_eq!(
            what_payment_buys(
                &catalog,
                &payment(&[("pdt_ours", 1)], &[("plan", "weekly")])
            ),
            Purchase::Pass {
                plan: monthly,
                days: 30
            }
        );
        assert_eq!(
            what_payment_buys(
                &catalog,
                &payment(&[("pdt_week", 2), ("pdt_other", 5), ("pdt_ours", 1)], &[])
            ),
            Purchase::Pass {
                plan: monthly,
                days: 44
            }
        );
        let mut renewal = payment(&[("pdt_pro", 1)], &[]);
        renewal.subscription_id = Some("sub_1".into());
        assert_eq!(
            what_payment_buys(&catalog, &renewal),
            Purchase::Subscription {
                subscription_id: "sub_1".into()
            }
        );
        // As Dodo sends a subscription's payments: no cart at all.
        let mut cartless = payment(&[], &[]);
        cartless.subscription_id = Some("sub_3".into());
        assert_eq!(
            what_payment_buys(&catalog, &cartless),
            Purchase::Subscription {
                subscription_id: "sub_3".into()
            }
        );
        let mut elsewhere = payment(&[("pdt_other", 1)], &[]);
        elsewhere.subscription_id = Some("sub_2".into());
        assert_eq!(
            what_payment_buys(&catalog, &elsewhere),
            Purchase::Nothing(NothingBought::NotSold)
        );
    }
}
