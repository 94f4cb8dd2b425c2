//! A user's profile: access, e-mail, bound customer; and the whole account (profile and
//! subscriptions) read in one query.

use super::*;

/// What is stored about one user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    pub user_id: UserId,
    pub email: Option<String>,
    /// The plan of the last payment granted.
    pub plan: Option<String>,
    /// Access ends here; `has_paid` is derived from it at read time.
    pub paid_until: Option<Timestamp>,
    pub payment_date: Option<Timestamp>,
    pub last_payment_id: Option<String>,
    pub pending_checkout: Option<PendingCheckout>,
    /// The Dodo customer the paywall created for this user and bound to them (see
    /// [`Store::bind_customer`]); the only customer their checkouts and portal use.
    pub customer_id: Option<String>,
    /// The last pass payment was refunded or lost in a dispute.
    pub refunded: bool,
    pub version: u64,
}

impl UserRecord {
    pub(super) fn empty(user_id: UserId) -> Self {
        Self {
            user_id,
            email: None,
            plan: None,
            paid_until: None,
            payment_date: None,
            last_payment_id: None,
            pending_checkout: None,
            customer_id: None,
            refunded: false,
            version: 0,
        }
    }
}

/// Everything that decides one user's access, and what they used of their limits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Account {
    pub profile: Option<UserRecord>,
    pub subscriptions: Vec<SubscriptionRecord>,
    /// Access given by the founder's backend, without a payment.
    pub grant: Option<ServerGrant>,
    /// Limit name -> what was used of it, in the period the counter names.
    pub usage: std::collections::BTreeMap<String, UsageCounter>,
}

fn user_from_item(item: &Item) -> Result<UserRecord, StoreError> {
    let pending_checkout = match (
        get_s(item, "checkout_session_id"),
        get_time(item, "checkout_created_at")?,
    ) {
        (Some(session_id), Some(created_at)) => Some(PendingCheckout {
            session_id: session_id.to_owned(),
            plan: get_s(item, "checkout_plan").unwrap_or_default().to_owned(),
            created_at,
            checkout_url: get_s(item, "checkout_url").map(str::to_owned),
        }),
        _ => None,
    };
    Ok(UserRecord {
        user_id: get_user_id(item)?,
        email: get_s(item, "email").map(str::to_owned),
        plan: get_s(item, "plan").map(str::to_owned),
        paid_until: get_time(item, "paid_until")?,
        payment_date: get_time(item, "payment_date")?,
        last_payment_id: get_s(item, "last_payment_id").map(str::to_owned),
        pending_checkout,
        customer_id: get_s(item, super::customers::BOUND_CUSTOMER).map(str::to_owned),
        refunded: get_bool(item, "refunded"),
        version: get_n(item, "version")?.unwrap_or(0).max(0) as u64,
    })
}

impl Store {
    pub async fn get_user(&self, user: &UserId) -> Result<Option<UserRecord>, StoreError> {
        self.get(user_key(user))
            .await?
            .as_ref()
            .map(user_from_item)
            .transpose()
    }

    /// A user's profile, subscriptions, grant and usage, in one strongly consistent query.
    pub async fn get_account(&self, user: &UserId) -> Result<Account, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk >= :profile")
            .expression_attribute_values(":pk", s(format!("USER#{user}")))
            .expression_attribute_values(":profile", s(PROFILE))
            .consistent_read(true)
            .send()
            .await?;
        let mut account = Account::default();
        for item in output.items() {
            match get_s(item, "sk") {
                Some(PROFILE) => account.profile = Some(user_from_item(item)?),
                Some(sk) if sk.starts_with(SUBSCRIPTION_PREFIX) => {
                    account.subscriptions.push(subscription_from_item(item)?)
                }
                Some(super::server_grants::SERVER_GRANT) => {
                    account.grant = Some(super::server_grants::server_grant_from_item(item)?)
                }
                Some(sk) if sk.starts_with(super::usage::USAGE_PREFIX) => {
                    if let Some((name, counter)) = super::usage::usage_from_item(item)? {
                        account.usage.insert(name, counter);
                    }
                }
                _ => {}
            }
        }
        Ok(account)
    }

    /// Users whose profile carries this e-mail (at most two: enough to know whether the
    /// address is ambiguous).
    pub async fn users_by_email(&self, email: &Email) -> Result<Vec<UserId>, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(EMAIL_INDEX)
            .key_condition_expression("email = :email")
            .expression_attribute_values(":email", s(email.as_str()))
            .limit(2)
            .send()
            .await?;
        output
            .items()
            .iter()
            .filter_map(|item| get_s(item, "pk")?.strip_prefix("USER#"))
            .map(|raw| UserId::parse(raw).map_err(|e| StoreError::Corrupt(e.to_string())))
            .collect()
    }
}
