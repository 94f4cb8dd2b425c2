//! A user's profile: access, e-mail, bound customer; and the whole account (profile and
//! subscriptions) read in one query.

use std::collections::BTreeMap;

use super::*;

/// What is stored about one user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    pub user_id: UserId,
    pub email: Option<String>,
    /// Each pass plan's own paid time: plan -> when it ends. A pass of one plan never
    /// moves or relabels another plan's time (issue 17, M1); what a user may use now is
    /// the best plan whose time runs (`Catalog::best_pass`).
    pub passes: BTreeMap<String, Timestamp>,
    /// Derived from `passes`: the plan whose pass ends last (kept on the item for readers
    /// of the older shape).
    pub plan: Option<String>,
    /// Derived from `passes`: when the last pass ends (all pass access ends here).
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
    /// Sets `plan`'s pass to end at `until` (or removes it), and the derived fields.
    pub fn set_pass(&mut self, plan: &str, until: Option<Timestamp>) {
        match until {
            Some(until) => {
                self.passes.insert(plan.to_owned(), until);
            }
            None => {
                self.passes.remove(plan);
            }
        }
        self.derive_from_passes();
    }

    /// `plan` and `paid_until` from `passes`: the pass that ends last.
    fn derive_from_passes(&mut self) {
        if let Some((plan, until)) = self
            .passes
            .iter()
            .max_by_key(|(name, until)| (**until, (*name).clone()))
        {
            self.plan = Some(plan.clone());
            self.paid_until = Some(*until);
        }
    }

    /// Each plan's pass that still runs at `now`.
    pub fn passes_running(&self, now: Timestamp) -> impl Iterator<Item = (&str, Timestamp)> {
        self.passes
            .iter()
            .filter(move |(_, until)| **until > now)
            .map(|(plan, until)| (plan.as_str(), *until))
    }

    /// `passes` as stored: a map of plan -> end (Unix seconds).
    pub(super) fn passes_value(&self) -> AttributeValue {
        AttributeValue::M(
            self.passes
                .iter()
                .map(|(plan, until)| (plan.clone(), n(until.unix_seconds())))
                .collect(),
        )
    }

    pub(super) fn empty(user_id: UserId) -> Self {
        Self {
            user_id,
            email: None,
            passes: BTreeMap::new(),
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
    /// A trial of a plan the paywall runs without a card.
    pub trial: Option<crate::trial::CardlessTrial>,
    /// Limit name -> what was used of it, in the period the counter names.
    pub usage: std::collections::BTreeMap<String, UsageCounter>,
    /// How many access-changing writes this user has had (`USER#{sub}` / `REV`): each
    /// one that writes access events is conditioned on the count it read and bumps it,
    /// so concurrent changes serialise and none computes its event from a stale
    /// snapshot (L9).
    pub access_rev: i64,
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
    let plan = get_s(item, "plan").map(str::to_owned);
    let paid_until = get_time(item, "paid_until")?;
    let passes = match item.get("passes") {
        Some(AttributeValue::M(map)) => map
            .iter()
            .map(|(name, value)| match value {
                AttributeValue::N(raw) => raw
                    .parse::<i64>()
                    .map(|seconds| (name.clone(), Timestamp::from_unix_seconds(seconds)))
                    .map_err(|_| StoreError::Corrupt(format!("passes.{name} is not a number"))),
                _ => Err(StoreError::Corrupt(format!(
                    "passes.{name} is not a number"
                ))),
            })
            .collect::<Result<BTreeMap<_, _>, _>>()?,
        Some(_) => return Err(StoreError::Corrupt("passes is not a map".into())),
        // Written before passes were kept per plan: one plan's time.
        None => plan.clone().zip(paid_until).into_iter().collect(),
    };
    let mut record = UserRecord {
        user_id: get_user_id(item)?,
        email: get_s(item, "email").map(str::to_owned),
        passes,
        plan,
        paid_until,
        payment_date: get_time(item, "payment_date")?,
        last_payment_id: get_s(item, "last_payment_id").map(str::to_owned),
        pending_checkout,
        customer_id: get_s(item, super::customers::BOUND_CUSTOMER).map(str::to_owned),
        refunded: get_bool(item, "refunded"),
        version: get_n(item, "version")?.unwrap_or(0).max(0) as u64,
    };
    record.derive_from_passes();
    Ok(record)
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
                Some(super::trials::CARDLESS_TRIAL) => {
                    account.trial = Some(super::trials::cardless_trial_from_item(item)?)
                }
                Some(super::access_events::ACCESS_REV) => {
                    account.access_rev = get_n(item, "rev")?.unwrap_or(0);
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
