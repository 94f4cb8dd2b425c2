//! `cargo run -p dev -- simulate --users N --months M --seed S`: a year in the life of
//! the paywall, in seconds, checked against what Dodo knows.
//!
//! The whole local stack runs in this process on a frozen test clock (a seed replays to
//! the second): the handlers, the embedded DynamoDB engine, the Dodo simulator and the
//! hourly reconcile. N users act through the same HTTP routes a frontend and Dodo use —
//! they buy passes and subscriptions with the simulator's three cards (double-clicking
//! sometimes), `starter` with Dodo's trial (the card taken, charged at the trial's end,
//! some declined then), start the card-less trial of `team` (pressing twice at once, or
//! with a second account on the same Gmail mailbox — dots, `+tag`, googlemail.com — at
//! the same moment or later, which must be refused), preview and apply plan changes
//! between the subscription plans (an upgrade now, a downgrade at the renewal), drop a
//! scheduled change, cancel at period end and take it back (in Dodo's portal or the
//! app's own routes), put in new cards after a declined renewal, re-buy; the founder
//! refunds; banks raise disputes; users share e-mails. Each week brings new random
//! faults (lost, repeated, late and reordered webhooks, Dodo errors), and once the
//! DynamoDB engine is stopped for a few hours and started again.
//!
//! After every step (a day) the invariants are checked for every user whose state moved,
//! and for everyone each month and at the end; and **on every hour** from two hours
//! before to three hours after each moment that matters for a user — a card-less trial's
//! end, a Dodo trial's end (its first charge), a renewal with a scheduled change. Hourly
//! checks for everyone (200 users × 8,760 hours, each a status call and store reads) would
//! cost about twenty times the run for hours in which nothing can change by itself: away
//! from those moments access moves only with an event, and the daily checks of whoever
//! had one already see it once its repair window has closed.
//! (a) a user Dodo considers paid (or on a trial) has access, except within the repair
//!     window;
//! (b) nobody else has access, beyond the documented grace rules;
//! (c) the access granted equals the access paid for (or the trial's end), to the second;
//! (d) no webhook is answered 2xx before its effect is stored (none while the engine is
//!     down);
//! (e) the audit trail holds every applied delivery exactly once;
//! (f) a trial is shown only while one of the user's runs, with its own end (at any
//!     moment: no lost webhook makes a trial longer);
//! (g) the plan shown is the plan Dodo's subscription is on (after the repair window);
//! (h) a plan change is an upgrade now or a downgrade at the renewal as the prices say,
//!     and an upgrade is charged what its preview said;
//! (i) a scheduled change takes effect exactly at its renewal: never shown before it, and
//!     that renewal charged at the new plan's price;
//! (j) no one has two trials of a plan, per account and per mailbox (at the end);
//! (k) no subscription's period is charged twice (at the end).
//!
//! The checker is independent of what it checks: every expectation is computed here from
//! the documented rules (the book), stated below as this file's own constants and
//! functions — the renewal grace, what a pass buys (read from the catalogue text itself),
//! what a refund or a dispute takes back, the repair window and the orders of events it
//! tolerates, each plan's price and trial, what a trial gives, the e-mail normalisation
//! for one trial per person (`mailbox`, from the book's words), which move is an upgrade.
//! Nothing of the paywall's own policy is asked (no constant, no `Catalog`, not its
//! e-mail normaliser, no rule such as "does this claim revoke"): a defect planted in the
//! paywall's rules would otherwise move the expectation with it and pass unseen. `dev/tests/
//! simulate_independence.rs` plants one (a ten-day renewal grace) and shows it caught,
//! shows rules (j) and (k) flag a synthetic second trial and a period charged twice, and
//! keeps the list of what this file takes from the paywall to the one below.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

// What the checker takes from the crate it checks: only what drives the system under
// test or reads the state it then judges by its own rules; never a rule or a constant.
// - `UserId`: the key the store's reads take, built from the simulation's own user ids.
// - `Store`: plain reads of what the paywall stored (grants, claims, the pass expiry,
//   the audit trail), each compared with what the checker computes from Dodo's records.
// - `Clock`: the test clock the stack under test runs on (the driver moves it through
//   `/dev/clock`; the checker reads "now" from it as whole seconds).
// Two more are used once each, by full path, to drive: `runtime::init_logging` (the
// paywall's logs under SIMULATE_DEBUG) and `http::client_builder` (the HTTP client that
// plays the frontend, the founder and the bank).
use paywall::ids::UserId;
use paywall::store::Store;
use paywall::time::Clock;
use serde_json::{Value, json};

use crate::dodo_simulator::faults::{Faults, Rng};
use crate::dodo_simulator::{DodoSimulator, UserTruth, add_months};
use crate::local_server::{DEFAULT_JWT_SECRET, LocalStack, Settings};

pub const USAGE: &str = "usage: cargo run -p dev -- simulate [--users N] [--months M] [--seed S]
  defaults: --users 200 --months 12 --seed 1";

/// Where every simulation starts (fixed, so that a seed replays exactly).
const START: &str = "2027-01-04T00:00:00Z";

/// How long a change Dodo made may take to reach the paywall when its webhook is lost:
/// the hourly reconcile sees a lost purchase, renewal, cancellation or refund within the
/// hour, a dispute within six hours, and a subscription that recovered from on hold
/// within a day and an hour (on hold, it is asked about after six hours, then daily).
/// The book ("Test clock") says the same.
pub const REPAIR_WINDOW_SECONDS: i64 = 25 * 3600;

/// How long before and after a moment that matters (a trial's end, a renewal with a
/// scheduled change) its user is checked on every hour: two hours before it, three after.
const WATCH_BEFORE_SECONDS: i64 = 2 * 3600;
const WATCH_AFTER_SECONDS: i64 = 3 * 3600;

/// Probability that a user does something on a given day.
const ACTS_PER_DAY: f64 = 0.035;

const DAY: i64 = 86_400;

/// The renewal grace, as documented — never the paywall's constant. The book, "Money
/// rules": "An active subscription set to renew keeps access for a one-day renewal grace
/// after its `next_billing_date` while Dodo renews it"; "API", `GET /payment/status`:
/// "`plan_expires_at` of a subscription set to renew is its next billing date plus the
/// one-day renewal grace". Set to cancel, or cancelled, access ends at the period's end.
const RENEWAL_GRACE_SECONDS: i64 = DAY;

/// The book, "Configuration": `PLAN_DURATION_DAYS`, "Days of access one payment buys;
/// default 30" (a pass plan that names no `days`).
const DEFAULT_PASS_DAYS: i64 = 30;

/// The book, "Configuration": without `PLANS` or `plans.toml`, "one plan, `monthly`, a pass
/// of `PLAN_DURATION_DAYS` on `DODO_PRODUCT_ID`".
const DEFAULT_PLAN: &str = "monthly";

/// The book, "Plans, features and limits": the plan `free` is "what a signed-in user with
/// nothing paid may use (no product: it is not sold)".
const FREE_PLAN: &str = "free";

/// The founder's catalogue file, as written (the book, "Plans, features and limits": it is
/// built into every function; `PLANS` overrides it).
const PLANS_TOML: &str = include_str!("../../plans.toml");

/// A tolerance of the checker's about Dodo's records: a renewal's payment and the period
/// it starts are stamped a moment apart, so a payment up to a minute before the period's
/// start paid for that period (the book, "Money rules": "a full refund of the payment for
/// its current period ends it until the next period is paid").
const PERIOD_PAYMENT_SLACK_SECONDS: i64 = 60;

/// Whether a payment of Dodo's pays a subscription's whole period, in the checker's own
/// reading of the book ("Money rules": "a plan change's prorated charge, which Dodo marks
/// `charge_type: plan_change`, pays part of a period and its refund ends nothing"): a
/// `new` or `renewal` charge (or one Dodo does not mark) does; a `plan_change` only when
/// its service period is a whole one (`proration_factor` 1); anything else does not.
fn pays_a_period(payment: &Value) -> bool {
    match payment["charge_type"].as_str() {
        None | Some("new" | "renewal") => true,
        Some("plan_change") => payment["service_periods"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|period| {
                period["proration_factor"]
                    .as_str()
                    .and_then(|f| f.parse::<f64>().ok())
                    .is_some_and(|f| f >= 1.0)
            }),
        Some(_) => false,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    pub users: usize,
    pub months: u32,
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            users: 200,
            months: 12,
            seed: 1,
        }
    }
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut options = Self::default();
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let number = |what: &str| {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("{what} must be a whole number, not {value}"))
            };
            match flag.as_str() {
                "--users" => options.users = number("--users")?.max(1) as usize,
                "--months" => options.months = number("--months")?.clamp(1, 120) as u32,
                "--seed" => options.seed = number("--seed")?,
                other => return Err(format!("unknown option {other}")),
            }
        }
        Ok(options)
    }
}

/// One broken invariant, with what it takes to replay it.
#[derive(Clone, Debug)]
pub struct Violation {
    pub step: u32,
    pub at: String,
    pub user: String,
    pub rule: &'static str,
    pub detail: String,
}

pub struct Report {
    pub options: Options,
    pub events: u64,
    pub faults: u64,
    pub actions: u64,
    pub checks: u64,
    /// Of the checks, those made on the hour around a trial's end or a renewal with a
    /// scheduled change.
    pub hourly_checks: u64,
    /// The users' actions by kind (a double request counts once, its second request as
    /// its own kind).
    pub actions_by_kind: BTreeMap<&'static str, u64>,
    pub reconcile_runs: u64,
    pub violations: Vec<Violation>,
}

impl Report {
    /// The last line `simulate` prints.
    pub fn summary_line(&self) -> String {
        format!(
            "simulated {} users over {} months: {} events, {} faults, {} violations",
            self.options.users,
            self.options.months,
            self.events,
            self.faults,
            self.violations.len()
        )
    }

    pub fn describe(&self, violation: &Violation) -> String {
        format!(
            "violation ({}) of {} at step {} ({}): {} — replay: cargo run -p dev -- simulate --users {} --months {} --seed {}",
            violation.rule,
            violation.user,
            violation.step,
            violation.at,
            violation.detail,
            self.options.users,
            self.options.months,
            self.options.seed,
        )
    }
}

struct User {
    id: String,
    email: String,
    /// When the driver last did something for this user (ms).
    last_action_ms: i64,
    /// The next moment access may change by itself (a period, a grace, a pass or a
    /// card-less trial ending), as of the last check.
    next_boundary: Option<i64>,
    /// Another account on the same mailbox (the same address, or Gmail's dots, `+tag` or
    /// googlemail.com), if any: the same person, for trials.
    twin: Option<usize>,
    /// The card-less trials the paywall started for this account (answered `201`).
    trials: Vec<CardlessTrial>,
    /// The moments around which this user is checked on every hour (a trial's end, a
    /// renewal with a scheduled change), as of the last look.
    watch: Vec<i64>,
}

/// A card-less trial as the checker knows it: asked for at `from` and answered `201`;
/// The book: "`POST /payment/trial {"plan"}` | Starts the plan's card-less trial now"; it
/// "grants the plan's features and limits until it ends", `days` later.
#[derive(Clone, Debug)]
struct CardlessTrial {
    plan: String,
    from: i64,
    until: i64,
}

struct World {
    options: Options,
    stack: Arc<LocalStack>,
    simulator: DodoSimulator,
    store: Store,
    /// What the simulation sells, as the checker reads the catalogue itself.
    plans: Plans,
    clock: Clock,
    http: reqwest::Client,
    base: String,
    rng: Rng,
    users: Vec<User>,
    step: u32,
    actions: u64,
    checks: u64,
    hourly_checks: u64,
    kinds: BTreeMap<&'static str, u64>,
    /// The plan each subscription bought with Dodo's trial was bought on (its checkout's:
    /// a later plan change moves its product, not the trial it had), by id.
    bought_plan: HashMap<String, String>,
    /// A scheduled plan change as last seen before its renewal, by subscription: the
    /// product it moves to, and when.
    scheduled_seen: HashMap<String, (String, i64)>,
    violations: Vec<Violation>,
    /// The engine was down from .. to (ms): deliveries then must not have been 2xx.
    outages: Vec<(i64, i64)>,
    /// Where the time went: moving the clock, acting, choosing whom to check, checking.
    timings: [std::time::Duration; 4],
}

/// Runs the simulation; the report says what it found.
pub async fn run(options: Options) -> Result<Report, String> {
    if std::env::var_os("SIMULATE_DEBUG").is_some() {
        paywall::runtime::init_logging();
    }
    // Nothing of a simulation is kept: its engine's file goes on a RAM disk when there is
    // one (a quarter faster than a disk here).
    let scratch = std::path::Path::new("/dev/shm");
    let scratch = if scratch.is_dir() {
        scratch.to_owned()
    } else {
        std::env::temp_dir()
    };
    let state_dir = scratch.join(format!(
        "paywall-simulate-{}-{}",
        std::process::id(),
        options.seed
    ));
    let _ = std::fs::remove_dir_all(&state_dir);
    // The checker's own reading of the catalogue the stack is about to sell.
    let plans = Plans::from_env()?;
    let start = parse_time(START).ok_or("bad start")?;
    let clock = Clock::test(start * 1000, false);
    let stack = LocalStack::start(Settings {
        port: 0,
        state_dir: state_dir.clone(),
        clock: clock.clone(),
        seed: Some(options.seed),
        isolated: true,
        access_events_webhook: None,
    })
    .await
    .map_err(|e| format!("cannot start the local stack: {e}"))?;
    let simulator = stack
        .simulator
        .clone()
        .ok_or("the stack has no simulator")?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = {
        let stack = Arc::clone(&stack);
        tokio::spawn(async move {
            stack
                .serve(async {
                    let _ = stopped.await;
                })
                .await
                .map_err(|e| e.to_string())
        })
    };
    let mut world = World {
        options,
        store: stack.store.clone(),
        base: stack.base_url.clone(),
        simulator,
        plans,
        clock,
        http: paywall::http::client_builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?,
        rng: Rng::seeded(options.seed ^ 0x5eed),
        users: Vec::new(),
        step: 0,
        actions: 0,
        checks: 0,
        hourly_checks: 0,
        kinds: BTreeMap::new(),
        bought_plan: HashMap::new(),
        scheduled_seen: HashMap::new(),
        violations: Vec::new(),
        outages: Vec::new(),
        timings: Default::default(),
        stack: Arc::clone(&stack),
    };
    let outcome = world.live(start).await;
    if std::env::var_os("SIMULATE_DEBUG").is_some() {
        eprintln!("timings (clock, act, select, check): {:?}", world.timings);
        eprintln!(
            "time machine (reconcile, simulator): {:?}",
            world.stack.machine.time_spent()
        );
    }
    let report = Report {
        options,
        events: world
            .simulator
            .deliveries()
            .iter()
            .filter(|d| d.attempt == 1)
            .count() as u64
            + world.actions,
        faults: world.simulator.faults_injected() + world.outages.len() as u64,
        actions: world.actions,
        checks: world.checks,
        hourly_checks: world.hourly_checks,
        actions_by_kind: std::mem::take(&mut world.kinds),
        reconcile_runs: world.stack.machine.reconcile_runs(),
        violations: std::mem::take(&mut world.violations),
    };
    let _ = stop.send(());
    let _ = serving.await;
    let _ = std::fs::remove_dir_all(&state_dir);
    outcome.map(|()| report)
}

impl World {
    async fn live(&mut self, start: i64) -> Result<(), String> {
        for i in 0..self.options.users {
            let previous = i.checked_sub(1);
            let mut twin = None;
            let email = match previous {
                // One user in ten shares the e-mail of the user before (a family, a team).
                Some(p) if self.rng.chance(0.1) => {
                    twin = Some(p);
                    self.users[p].email.clone()
                }
                // A third of those after a Gmail user are that person again, under a
                // second account: the same mailbox written another way.
                Some(p) if self.users[p].email.ends_with("@gmail.com") && self.rng.chance(0.35) => {
                    twin = Some(p);
                    gmail_variant(&self.users[p].email, i)
                }
                _ if self.rng.chance(0.4) => format!("user.{i}@gmail.com"),
                _ => format!("user{i}@example.com"),
            };
            if let Some(p) = twin
                && self.users[p].twin.is_none()
            {
                self.users[p].twin = Some(i);
            }
            self.users.push(User {
                id: format!("u{i:05}"),
                email,
                last_action_ms: 0,
                next_boundary: None,
                twin,
                trials: Vec::new(),
                watch: Vec::new(),
            });
        }
        // How long to run (the simulator's calendar; this decides no expectation).
        let end = add_months(start, i64::from(self.options.months));
        let days = ((end - start) / DAY) as u32;
        // The engine goes down once, for three hours, a third of the way in.
        let outage_day = days / 3 + self.rng.below(u64::from(days / 3).max(1)) as u32;
        for day in 0..days {
            self.step = day + 1;
            let day_start = start + i64::from(day) * DAY;
            if day % 7 == 0 {
                self.new_faults().await?;
            }
            let mut checked: BTreeSet<usize> = BTreeSet::new();
            let mut plans: Vec<(i64, usize)> = Vec::new();
            for user in 0..self.users.len() {
                if self.rng.chance(ACTS_PER_DAY) {
                    plans.push((self.rng.below(DAY as u64) as i64, user));
                }
            }
            plans.sort_unstable();
            let outage_at =
                (day == outage_day).then(|| day_start + 8 * 3600 + self.rng.below(3600) as i64);
            let mut outage_pending = outage_at;
            let mut acts = plans.into_iter().peekable();
            // Hour by hour: the users who act in it, then, on the hour, whoever is near a
            // moment that matters (a trial's end, a renewal with a scheduled change).
            for hour in 1..=24 {
                let hour_end = day_start + hour * 3600;
                while let Some((offset, user)) = acts.next_if(|(o, _)| day_start + o < hour_end) {
                    let at = day_start + offset;
                    if let Some(down_at) = outage_pending
                        && down_at <= at
                    {
                        self.outage(down_at.max(self.now())).await?;
                        outage_pending = None;
                    }
                    let t0 = std::time::Instant::now();
                    if self.now() < at {
                        self.move_clock_to(at).await?;
                    }
                    let t1 = std::time::Instant::now();
                    self.act(user).await;
                    self.timings[0] += t1 - t0;
                    self.timings[1] += t1.elapsed();
                }
                if hour == 24 {
                    break; // the day's end: below, with everyone due
                }
                let t0 = std::time::Instant::now();
                let watchers = self.watchers(hour_end);
                self.timings[2] += t0.elapsed();
                if watchers.is_empty() {
                    continue;
                }
                if let Some(down_at) = outage_pending
                    && down_at <= hour_end
                {
                    self.outage(down_at.max(self.now())).await?;
                    outage_pending = None;
                }
                let t0 = std::time::Instant::now();
                if self.now() < hour_end {
                    self.move_clock_to(hour_end).await?;
                }
                let t1 = std::time::Instant::now();
                for index in watchers {
                    self.hourly_checks += 1;
                    self.check_access(index).await;
                }
                self.timings[0] += t1 - t0;
                self.timings[3] += t1.elapsed();
            }
            if let Some(down_at) = outage_pending {
                self.outage(down_at.max(self.now())).await?;
            }
            let t0 = std::time::Instant::now();
            self.move_clock_to(day_start + DAY).await?;
            self.timings[0] += t0.elapsed();
            if day % 30 == 29 {
                self.stack
                    .recycle_database()
                    .await
                    .map_err(|e| e.to_string())?;
            }
            let t0 = std::time::Instant::now();
            // Everyone each month and at the end; every day, whoever's repair window
            // closed that day (the first moment every rule must hold after they acted or
            // Dodo did something; a repair that did not happen shows then), and whoever's
            // pass ran out.
            let everyone = day % 30 == 29 || day + 1 == days;
            let now_ms = self.clock.now_millis();
            let day_ms = DAY * 1000;
            let window_ms = REPAIR_WINDOW_SECONDS * 1000;
            for index in 0..self.users.len() {
                let user = &self.users[index];
                let last = self
                    .simulator
                    .last_event_millis(&user.id)
                    .unwrap_or(i64::MIN)
                    .max(user.last_action_ms);
                let settled_today =
                    last > now_ms - day_ms - window_ms && last <= now_ms - window_ms;
                let boundary = user.next_boundary.is_some_and(|at| at * 1000 <= now_ms);
                if everyone || settled_today || boundary {
                    checked.insert(index);
                }
            }
            let watchers = self.watchers(now_ms / 1000);
            self.hourly_checks += watchers.len() as u64;
            checked.extend(watchers);
            self.timings[2] += t0.elapsed();
            let t0 = std::time::Instant::now();
            for index in checked {
                self.check_access(index).await;
            }
            self.timings[3] += t0.elapsed();
        }
        self.check_no_ack_while_down();
        self.check_audit().await;
        self.check_once_each();
        Ok(())
    }

    /// The users to check on the hour at `at`: those with a moment that matters at most
    /// two hours after `at` or three hours before it (so each such moment is seen on the
    /// two hours before it and the three after).
    fn watchers(&self, at: i64) -> Vec<usize> {
        self.users
            .iter()
            .enumerate()
            .filter(|(_, u)| {
                u.watch
                    .iter()
                    .any(|m| (m - WATCH_BEFORE_SECONDS..=m + WATCH_AFTER_SECONDS).contains(&at))
            })
            .map(|(index, _)| index)
            .collect()
    }

    /// The moments that matter for `user` in Dodo's state and the checker's record: the
    /// end of each card-less trial they were given, the end of each Dodo trial not yet
    /// charged (its `next_billing_date`), and each scheduled change's renewal.
    fn watch_moments(&self, user: usize, truth: &Truth, now: i64) -> Vec<i64> {
        let mut moments: Vec<i64> = self.users[user]
            .trials
            .iter()
            .map(|t| t.until)
            .filter(|until| until + WATCH_AFTER_SECONDS >= now)
            .collect();
        for s in truth
            .0
            .subscriptions
            .iter()
            .filter(|s| s["status"] == "active")
        {
            if truth.on_dodo_trial(s) {
                moments.extend(seconds(s, "next_billing_date"));
            }
            if let Some(at) = scheduled_change(s).map(|(_, at)| at) {
                moments.push(at);
            }
        }
        moments.sort_unstable();
        moments.dedup();
        moments
    }

    fn count(&mut self, kind: &'static str) {
        *self.kinds.entry(kind).or_default() += 1;
    }

    /// The test clock's time, in whole seconds.
    fn now(&self) -> i64 {
        self.clock.now_millis().div_euclid(1000)
    }

    fn now_text(&self) -> String {
        rfc(self.now())
    }

    fn violation(&mut self, user: &str, rule: &'static str, detail: String) {
        if std::env::var_os("SIMULATE_DEBUG").is_some() {
            let truth = self.simulator.user_truth(user);
            let brief = |v: &Value| {
                json!([
                    v["payment_id"],
                    v["subscription_id"],
                    v["status"],
                    v["created_at"],
                    v["product_cart"],
                    v["metadata"],
                    v["next_billing_date"],
                    v["cancel_at_next_billing_date"],
                    v["product_id"]
                ])
            };
            eprintln!("DEBUG {user} {rule}: {detail}");
            for p in &truth.payments {
                eprintln!("  payment {}", brief(p));
            }
            for p in &truth.subscriptions {
                eprintln!("  subscription {}", brief(p));
            }
            eprintln!(
                "  refunds {:?} disputes {:?}",
                truth.refunds.keys(),
                truth
                    .disputes
                    .values()
                    .map(|d| (d["payment_id"].clone(), d["dispute_status"].clone()))
                    .collect::<Vec<_>>()
            );
        }
        self.violations.push(Violation {
            step: self.step,
            at: self.now_text(),
            user: user.to_owned(),
            rule,
            detail,
        });
    }

    async fn move_clock_to(&self, at: i64) -> Result<(), String> {
        let answer = self
            .http
            .post(format!("{}/dev/clock", self.base))
            .json(&json!({"to": rfc(at)}))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !answer.status().is_success() {
            return Err(format!(
                "the clock refused to move: {}",
                answer.text().await.unwrap_or_default()
            ));
        }
        Ok(())
    }

    /// A new week, new weather: half the weeks have no fault at all.
    async fn new_faults(&mut self) -> Result<(), String> {
        let faults = if self.rng.chance(0.5) {
            Faults::default()
        } else {
            let pick = |rng: &mut Rng, p: f64, values: &[f64]| {
                if rng.chance(p) {
                    values[rng.below(values.len() as u64) as usize]
                } else {
                    0.0
                }
            };
            Faults {
                drop_webhooks: pick(&mut self.rng, 0.6, &[0.1, 0.3, 1.0]),
                duplicate_webhooks: pick(&mut self.rng, 0.4, &[0.2, 0.5]),
                delay_webhooks: self
                    .rng
                    .chance(0.3)
                    .then(|| ["30s", "10m", "2h"][self.rng.below(3) as usize].to_owned()),
                reorder_webhooks: self.rng.chance(0.3),
                dodo_errors: pick(&mut self.rng, 0.3, &[0.05, 0.2]),
            }
        };
        let answer = self
            .http
            .post(format!("{}/dev/faults", self.base))
            .json(&faults)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !answer.status().is_success() {
            return Err("the faults were refused".to_owned());
        }
        Ok(())
    }

    /// The engine stops at `at` for three hours: users and Dodo keep calling meanwhile.
    async fn outage(&mut self, at: i64) -> Result<(), String> {
        self.move_clock_to(at).await?;
        self.stack.stop_database().await;
        let down_ms = self.clock.now_millis();
        // Users keep clicking; Dodo keeps delivering (and retrying); reconcile keeps
        // running and failing.
        for _ in 0..3 {
            let user = self.rng.below(self.users.len() as u64) as usize;
            self.act(user).await;
        }
        self.move_clock_to(at + 3 * 3600).await?;
        let up_ms = self.clock.now_millis();
        self.outages.push((down_ms, up_ms));
        self.stack.start_database().await.map_err(|e| e.to_string())
    }

    fn token(&self, user: usize) -> String {
        let user = &self.users[user];
        crate::dev_jwt::mint_with(
            DEFAULT_JWT_SECRET.as_bytes(),
            &user.id,
            Some(&user.email),
            true,
            self.now(),
        )
    }

    /// One thing a user (or the founder, or a bank, about the user) does.
    async fn act(&mut self, user: usize) {
        self.actions += 1;
        self.users[user].last_action_ms = self.clock.now_millis();
        let id = self.users[user].id.clone();
        let truth = Truth::of(&self.simulator, &id);
        let subscriptions = truth.0.subscriptions.clone();
        let on_hold = subscriptions
            .iter()
            .find(|s| s["status"] == "on_hold")
            .cloned();
        let active = subscriptions
            .iter()
            .find(|s| s["status"] == "active")
            .cloned();
        let roll = self.rng.below(100);
        match roll {
            0..=21 => self.buy(user, false).await,
            22..=37 if active.is_none() => self.buy(user, true).await,
            22..=37 => self.buy(user, false).await,
            38..=45 => self.cardless_trial(user).await,
            46..=56 => match &active {
                Some(active) => self.change_plan(user, active).await,
                None => self.buy(user, true).await,
            },
            57..=69 => match (&on_hold, &active) {
                (Some(held), _) => {
                    let works = self.rng.chance(0.7);
                    self.count("new card (portal)");
                    self.portal(
                        user,
                        held,
                        "card",
                        Some(if works { "succeeds" } else { "fails" }),
                    )
                    .await;
                }
                (None, Some(active)) => {
                    let resume = active["cancel_at_next_billing_date"] == true;
                    // Half through Dodo's portal, half through the app's own routes.
                    if self.rng.chance(0.5) {
                        let action = if resume { "resume" } else { "cancel" };
                        self.count(if resume {
                            "resume (portal)"
                        } else {
                            "cancel (portal)"
                        });
                        self.portal(user, active, action, None).await;
                    } else {
                        self.cancel_or_resume(user, resume).await;
                    }
                }
                (None, None) => {
                    let subscription = self.rng.chance(0.5);
                    self.buy(user, subscription).await;
                }
            },
            70..=84 => {
                self.count("refund");
                self.refund(&truth).await
            }
            _ => {
                self.count("dispute");
                self.dispute(&truth).await
            }
        }
        let truth = Truth::of(&self.simulator, &id);
        let now = self.now();
        self.users[user].watch = self.watch_moments(user, &truth, now);
    }

    /// The user starts a plan's card-less trial in the app (`POST /payment/trial`).
    /// Sometimes they press twice at once, or a second account on the same mailbox asks
    /// at the same moment; later, either may ask again. Each `201` is a trial given.
    async fn cardless_trial(&mut self, user: usize) {
        let offered: Vec<(String, i64)> = self
            .plans
            .0
            .iter()
            .filter_map(|p| match p.trial {
                Some((days, false)) => Some((p.name.clone(), days)),
                _ => None,
            })
            .collect();
        if offered.is_empty() {
            return self.buy(user, false).await;
        }
        let (plan, days) = offered[self.rng.below(offered.len() as u64) as usize].clone();
        self.count("card-less trial");
        let second = match self.rng.below(10) {
            0..=1 => Some(user),
            2..=5 => self.users[user].twin,
            _ => None,
        };
        if let Some(other) = second {
            self.count(if other == user {
                "card-less trial, asked twice at once"
            } else {
                "card-less trial, twin account at once"
            });
            self.users[other].last_action_ms = self.clock.now_millis();
        }
        let now = self.now();
        let ask = |who: usize| {
            self.http
                .post(format!("{}/payment/trial", self.base))
                .bearer_auth(self.token(who))
                .json(&json!({"plan": plan}))
                .send()
        };
        let (first, again) = tokio::join!(ask(user), async {
            match second {
                Some(other) => Some(ask(other).await),
                None => None,
            }
        });
        for (who, answer) in [(Some(user), Some(first)), (second, again)] {
            let (Some(who), Some(Ok(answer))) = (who, answer) else {
                continue;
            };
            if answer.status().as_u16() != 201 {
                continue; // refused (had one, paid, an outage): judged at the end
            }
            let body: Value = answer.json().await.unwrap_or_default();
            let until = now + days * DAY;
            self.users[who].trials.push(CardlessTrial {
                plan: plan.clone(),
                from: now,
                until,
            });
            let shown = body["trial_ends_at"].as_str().and_then(parse_time);
            if shown != Some(until) || body["status"] != "trialing" {
                let id = self.users[who].id.clone();
                self.violation(
                    &id,
                    "(f) trial as documented",
                    format!(
                        "a {days}-day trial of {plan} started at {} answered {body}",
                        rfc(now)
                    ),
                );
            }
            if who != user {
                let truth = Truth::of(&self.simulator, &self.users[who].id);
                self.users[who].watch = self.watch_moments(who, &truth, now);
            }
        }
    }

    /// The user moves their subscription to another plan in the app: mostly a preview
    /// first (`POST /payment/change-plan {"plan", "preview": true}`), then the change;
    /// or, with a change scheduled, sometimes drops it (`DELETE /payment/change-plan`).
    /// The book: an upgrade (a higher price) takes effect now, prorated, charged what the
    /// preview said; a downgrade at the next billing date.
    async fn change_plan(&mut self, user: usize, active: &Value) {
        let token = self.token(user);
        let subscription_id = active["subscription_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if scheduled_change(active).is_some() && self.rng.chance(0.4) {
            self.count("drop scheduled change");
            self.scheduled_seen.remove(&subscription_id);
            let _ = self
                .http
                .delete(format!("{}/payment/change-plan", self.base))
                .bearer_auth(&token)
                .send()
                .await;
            return;
        }
        let Some(current) = active["product_id"]
            .as_str()
            .and_then(|p| self.plans.name_of(p))
        else {
            return;
        };
        let targets: Vec<String> = self
            .plans
            .0
            .iter()
            .filter(|p| p.pass_days.is_none() && p.name != current)
            .map(|p| p.name.clone())
            .collect();
        if targets.is_empty() {
            return;
        }
        let target = targets[self.rng.below(targets.len() as u64) as usize].clone();
        self.count("change plan");
        let (http, base) = (self.http.clone(), self.base.clone());
        let call = |preview: bool| {
            let mut body = json!({"plan": target});
            if preview {
                body["preview"] = json!(true);
            }
            http.post(format!("{base}/payment/change-plan"))
                .bearer_auth(&token)
                .json(&body)
                .send()
        };
        let preview = if self.rng.chance(0.8) {
            self.count("change plan: preview");
            ok_json(call(true).await).await
        } else {
            None
        };
        if let Some(preview) = &preview {
            self.check_change_terms(user, &current, &target, preview);
            if self.rng.chance(0.15) {
                return; // looked at the price, kept the plan
            }
        }
        let Some(applied) = ok_json(call(false).await).await else {
            return;
        };
        self.scheduled_seen.remove(&subscription_id);
        self.check_change_terms(user, &current, &target, &applied);
        // Charged what the preview said, at the same moment (the book: "What Dodo will
        // charge to move the subscription to `plan`, from Dodo's own preview").
        let charged = applied["payment_id"].as_str().and_then(|id| {
            let truth = Truth::of(&self.simulator, &self.users[user].id);
            truth
                .0
                .payments
                .iter()
                .find(|p| p["payment_id"] == id && p["status"] == "succeeded")
                .and_then(|p| p["total_amount"].as_i64())
        });
        let previewed = preview
            .as_ref()
            .filter(|p| p["effective_at"] == "immediately")
            .and_then(|p| p["preview"]["charge_now"].as_i64());
        if let (Some(charged), Some(previewed)) = (charged, previewed)
            && charged != previewed
        {
            let id = self.users[user].id.clone();
            self.violation(
                &id,
                "(h) change as documented",
                format!("{current} → {target}: previewed {previewed}, charged {charged}"),
            );
        }
    }

    /// A move from `current` to `target` is an upgrade, now, when `target` costs more,
    /// else a downgrade at the next billing date (the book, "Changing plans": "an upgrade (a
    /// plan ranking higher: price per period-day …) takes effect now, prorated; a
    /// downgrade at the next billing date", the defaults). Judged only between monthly
    /// plans with their own different prices and the default `change`.
    fn check_change_terms(&mut self, user: usize, current: &str, target: &str, answer: &Value) {
        let (Some(from), Some(to)) = (self.plans.named(current), self.plans.named(target)) else {
            return;
        };
        if from.change_policy || to.change_policy {
            return;
        }
        let (Some(from_price), Some(to_price)) = (from.price_cents, to.price_cents) else {
            return;
        };
        if from_price == to_price {
            return;
        }
        let (direction, effective_at) = if to_price > from_price {
            ("upgrade", "immediately")
        } else {
            ("downgrade", "next_billing_date")
        };
        if answer["direction"] != direction || answer["effective_at"] != effective_at {
            let id = self.users[user].id.clone();
            self.violation(
                &id,
                "(h) change as documented",
                format!(
                    "{current} ({from_price}) → {target} ({to_price}) is an {direction} {effective_at}, answered {} {}",
                    answer["direction"], answer["effective_at"]
                ),
            );
        }
    }

    /// Cancel at period end, or take it back, from the app (`POST /payment/cancel`,
    /// `POST /payment/resume`).
    async fn cancel_or_resume(&mut self, user: usize, resume: bool) {
        self.count(if resume {
            "resume (app)"
        } else {
            "cancel (app)"
        });
        let path = if resume { "resume" } else { "cancel" };
        let _ = self
            .http
            .post(format!("{}/payment/{path}", self.base))
            .bearer_auth(self.token(user))
            .send()
            .await;
    }

    /// Buys a plan through checkout: create the session (sometimes twice at once, a
    /// double click), pay on the simulator's page with one of its cards, confirm.
    async fn buy(&mut self, user: usize, subscription: bool) {
        let plans: Vec<String> = self
            .plans
            .0
            .iter()
            .filter(|p| p.pass_days.is_none() == subscription)
            .map(|p| p.name.clone())
            .collect();
        if plans.is_empty() {
            return;
        }
        let plan = plans[self.rng.below(plans.len() as u64) as usize].clone();
        self.count(if subscription {
            "buy subscription"
        } else {
            "buy pass"
        });
        let token = self.token(user);
        let create = || {
            self.http
                .post(format!("{}/payment/create-checkout-session", self.base))
                .bearer_auth(&token)
                .json(&json!({"plan": plan}))
                .send()
        };
        let double_click = self.rng.chance(0.05);
        let (first, second) = if double_click {
            *self.kinds.entry("checkout, double click").or_default() += 1;
            let (a, b) = tokio::join!(create(), create());
            (a, Some(b))
        } else {
            (create().await, None)
        };
        let Some(session) = session_of(first).await else {
            return; // refused (already subscribed, rate limited, an outage): fine
        };
        if let Some(second) = second
            && let Some(other) = session_of(second).await
            && other["session_id"] != session["session_id"]
        {
            let id = self.users[user].id.clone();
            self.violation(
                &id,
                "double click",
                format!(
                    "two checkout sessions for one click: {} and {}",
                    session["session_id"], other["session_id"]
                ),
            );
        }
        let Some(url) = session["checkout_url"].as_str() else {
            return;
        };
        let card = self.rng.below(100);
        let mut form = vec![("outcome", if card < 12 { "failed" } else { "succeeded" })];
        if subscription && card >= 82 {
            form.push(("renewal", "fails"));
        }
        let Ok(paid) = post_form(&self.http, url, &form).await else {
            return;
        };
        let location = paid
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        // Dodo's trial: the page sends back the subscription, and nothing is paid yet.
        if let Some(subscription_id) = location
            .split(['?', '&'])
            .find_map(|pair| pair.strip_prefix("subscription_id="))
        {
            self.bought_plan
                .insert(subscription_id.to_owned(), plan.clone());
        }
        let Some(payment_id) = location
            .split(['?', '&'])
            .find_map(|pair| pair.strip_prefix("payment_id="))
        else {
            return;
        };
        if !location.contains("status=succeeded") {
            return;
        }
        // The frontend confirms, retrying a failure a few times as a real one would.
        for _ in 0..3 {
            let answer = self
                .http
                .post(format!("{}/payment/success", self.base))
                .bearer_auth(&token)
                .json(&json!({"payment_id": payment_id}))
                .send()
                .await;
            if answer.is_ok_and(|a| a.status().is_success() || a.status().is_client_error()) {
                break;
            }
        }
    }

    /// The user opens the customer portal (through the paywall) and presses a button.
    async fn portal(
        &mut self,
        user: usize,
        subscription: &Value,
        action: &str,
        renewal: Option<&str>,
    ) {
        let token = self.token(user);
        let Ok(answer) = self
            .http
            .post(format!("{}/payment/portal", self.base))
            .bearer_auth(&token)
            .send()
            .await
        else {
            return;
        };
        if !answer.status().is_success() {
            return;
        }
        let Ok(body) = answer.json::<Value>().await else {
            return;
        };
        let (Some(link), Some(id)) = (
            body["portal_url"].as_str(),
            subscription["subscription_id"].as_str(),
        ) else {
            return;
        };
        let mut form = vec![("action", action)];
        if let Some(renewal) = renewal {
            form.push(("renewal", renewal));
        }
        let _ = post_form(&self.http, &format!("{link}/subscriptions/{id}"), &form).await;
    }

    /// The founder refunds the user's latest payment (through Dodo's API).
    async fn refund(&mut self, truth: &Truth) {
        let Some(payment) = truth.latest_claimable_payment() else {
            return;
        };
        let _ = self
            .http
            .post(format!("{}/dodo/refunds", self.base))
            .bearer_auth("sk_local_simulator")
            .json(&json!({"payment_id": payment}))
            .send()
            .await;
    }

    /// A bank disputes the user's latest payment; decided in a week.
    async fn dispute(&mut self, truth: &Truth) {
        let Some(payment) = truth.latest_claimable_payment() else {
            return;
        };
        let outcome = if self.rng.chance(0.6) { "lost" } else { "won" };
        let _ = self
            .http
            .post(format!("{}/dodo/simulator/disputes", self.base))
            .json(&json!({"payment_id": payment, "outcome": outcome}))
            .send()
            .await;
    }

    /// (f): a trial is shown only while one runs, with its own end: one of this user's
    /// card-less trials (`trial_ends_at` its end, before it), or a Dodo subscription of
    /// theirs created with `trial_period_days` (its end `created_at` plus those days; shown
    /// at most through the renewal grace after it, while Dodo charges). Judged at any
    /// moment, repair window or not: no lost webhook makes a trial longer.
    fn check_trial_shown(&mut self, index: usize, truth: &Truth, view: &Value, now: i64) {
        if view["status"] != "trialing" {
            return;
        }
        let ends = view["trial_ends_at"].as_str().and_then(parse_time);
        let cardless = self.users[index]
            .trials
            .iter()
            .any(|t| Some(t.until) == ends && t.from <= now && now < t.until);
        let dodo = truth.0.subscriptions.iter().any(|s| {
            let days = s["trial_period_days"].as_i64().unwrap_or(0);
            let end = seconds(s, "created_at").map(|created| created + days * DAY);
            days > 0 && end == ends && end.is_some_and(|end| now < end + RENEWAL_GRACE_SECONDS)
        });
        if !cardless && !dodo {
            let user = self.users[index].id.clone();
            self.violation(
                &user,
                "(f) trial not given",
                format!(
                    "the paywall shows a trial ending {} that no trial of this user's runs to ({view})",
                    ends.map_or("?".into(), rfc)
                ),
            );
        }
    }

    /// (i) a scheduled change takes effect exactly at its renewal: before it, the plan
    /// shown is never the plan it moves to (the book: "a **downgrade** at the **next
    /// billing date**"); at it, the renewal is charged at the new plan's price (the book,
    /// the simulator's Dodo: "the plan change payment replaces the renewal payment" at
    /// the new price), never the old plan renewed as if nothing was scheduled. Judged at
    /// any moment (the plan shown after the renewal is (g), once settled).
    fn check_scheduled_change(&mut self, index: usize, truth: &Truth, view: &Value, now: i64) {
        let user = self.users[index].id.clone();
        for subscription in &truth.0.subscriptions {
            let Some(id) = subscription["subscription_id"].as_str() else {
                continue;
            };
            if let Some((product, at)) = scheduled_change(subscription)
                && now < at
                && subscription["status"] == "active"
            {
                self.scheduled_seen
                    .insert(id.to_owned(), (product.clone(), at));
                let new_plan = self.plans.name_of(&product);
                let old_plan = subscription["product_id"]
                    .as_str()
                    .and_then(|p| self.plans.name_of(p));
                if view["subscription_id"] == id
                    && new_plan != old_plan
                    && new_plan.as_deref().is_some_and(|plan| view["plan"] == plan)
                {
                    self.violation(
                        &user,
                        "(i) scheduled change before its renewal",
                        format!(
                            "{id} moves to {} at {}, the paywall shows it already ({view})",
                            new_plan.unwrap_or_default(),
                            rfc(at)
                        ),
                    );
                }
            }
            let Some((product, at)) = self.scheduled_seen.get(id).cloned() else {
                continue;
            };
            if now < at {
                continue;
            }
            self.scheduled_seen.remove(id);
            let price = self.plans.by_product(&product).and_then(|p| p.price_cents);
            // The period starting at the renewal, paid (none: declined, cancelled, or paid
            // by a credit).
            for payment in truth.0.payments.iter().filter(|p| {
                p["subscription_id"] == id
                    && p["status"] == "succeeded"
                    && period_start(p) == Some(at)
            }) {
                let amount = payment["total_amount"].as_i64();
                let quantity = subscription["quantity"].as_i64().unwrap_or(1);
                let wrong = match payment["charge_type"].as_str() {
                    Some("plan_change") => price.is_some_and(|p| amount != Some(p * quantity)),
                    _ => true,
                };
                if wrong {
                    self.violation(
                        &user,
                        "(i) scheduled change at its renewal",
                        format!(
                            "{id} was to move to {product} ({}) at {}; the period was charged {} as {}",
                            price.map_or("no price".into(), |p| p.to_string()),
                            rfc(at),
                            payment["total_amount"],
                            payment["charge_type"]
                        ),
                    );
                }
            }
        }
    }

    /// At the end, over everything Dodo and the paywall did:
    /// (j) no one had two trials of a plan — per account, and per mailbox (the book: "One
    ///     trial per person and plan. A user who had a trial of a plan, or whose verified
    ///     e-mail had one", normalised by [`mailbox`]): the card-less trials the paywall
    ///     started (each `201`) and Dodo's (each subscription created with
    ///     `trial_period_days`, of the plan its checkout bought);
    /// (k) no period charged twice: per subscription, no two succeeded charges for a whole
    ///     period (`new`, `renewal`, or a plan change billed as the period, proration 1)
    ///     that start the same period. (Counts only grow: the end sees every case.)
    fn check_once_each(&mut self) {
        let mut trials: Vec<TrialTaken> = Vec::new();
        let mut payments: Vec<Value> = Vec::new();
        for user in &self.users {
            for trial in &user.trials {
                trials.push(TrialTaken {
                    plan: trial.plan.clone(),
                    user: user.id.clone(),
                    email: user.email.clone(),
                    what: format!("a card-less trial from {}", rfc(trial.from)),
                    subscription: None,
                });
            }
            let truth = self.simulator.user_truth(&user.id);
            for subscription in &truth.subscriptions {
                if subscription["trial_period_days"].as_i64().unwrap_or(0) == 0 {
                    continue;
                }
                let id = subscription["subscription_id"].as_str().unwrap_or_default();
                let plan = self.bought_plan.get(id).cloned().or_else(|| {
                    subscription["product_id"]
                        .as_str()
                        .and_then(|p| self.plans.name_of(p))
                });
                trials.push(TrialTaken {
                    plan: plan.unwrap_or_default(),
                    user: user.id.clone(),
                    email: user.email.clone(),
                    what: format!("Dodo's trial on {id}"),
                    subscription: Some(id.to_owned()),
                });
            }
            payments.extend(truth.payments);
        }
        let twice = trials_taken_twice(&trials);
        for (_, second, detail) in twice {
            let user = trials[second].user.clone();
            self.violation(&user, "(j) two trials of a plan", detail);
        }
        for detail in periods_charged_twice(&payments) {
            self.violation("-", "(k) a period charged twice", detail);
        }
    }

    /// (d): while the engine was down nothing could be stored, so nothing may have been
    /// acknowledged.
    fn check_no_ack_while_down(&mut self) {
        let deliveries = self.simulator.deliveries();
        // What the paywall acknowledged having stored: every answer but `ignored` (an
        // event that changes nothing needs no store, and may be answered in an outage).
        let acknowledged: Vec<String> = deliveries
            .iter()
            .filter(|d| (200..300).contains(&d.status))
            .filter(|d| d.outcome.as_deref() != Some("ignored"))
            .filter(|d| {
                self.outages
                    .iter()
                    .any(|(down, up)| d.at_ms > *down && d.at_ms < *up)
            })
            .map(|d| format!("{} {} (attempt {})", d.event_type, d.webhook_id, d.attempt))
            .collect();
        for delivery in acknowledged {
            self.violation(
                "-",
                "(d) acknowledged before stored",
                format!("{delivery} was answered 2xx while DynamoDB was down"),
            );
        }
    }

    /// (a), (b), (c) for one user, against what Dodo knows.
    async fn check_access(&mut self, index: usize) {
        self.checks += 1;
        let user = self.users[index].id.clone();
        let truth = Truth::of(&self.simulator, &user);
        let now = self.now();
        let quiet_since = (now - REPAIR_WINDOW_SECONDS) * 1000;
        let settled = truth.0.last_event_ms.is_none_or(|at| at < quiet_since)
            && self.users[index].last_action_ms < quiet_since;

        // Passes: every paid one granted once, in time, to this user; each plan's expiry
        // is the fold of that plan's grants and what refunds and lost disputes took back
        // (the book, "Money rules": a new pass extends from the later of now and the
        // current expiry; money returned takes its days back). Each plan's paid time is
        // its own: a pass of plan P extends P's expiry, never another plan's; the user
        // has access while any plan's time runs.
        let mut steps: Vec<(String, i64, i64, bool)> = Vec::new(); // see `pass_expiries`
        let mut pass_ok = true;
        let passes = truth.pass_payments(&self.plans);
        let ids: Vec<&str> = passes.iter().map(|p| p.id.as_str()).collect();
        let read = tokio::try_join!(
            self.store.payment_grants(&ids),
            self.store.payments_claims(&ids)
        );
        let (mut grants, mut claims_of) = match read {
            Ok(read) => read,
            Err(err) => {
                self.violation(&user, "store", format!("cannot read the grants: {err}"));
                return;
            }
        };
        for payment in passes {
            let id = payment.id.clone();
            let grant = grants.remove(&id);
            let Some(grant) = grant else {
                if now - payment.created_at >= REPAIR_WINDOW_SECONDS {
                    self.violation(
                        &user,
                        "(a) paid, no access",
                        format!(
                            "pass payment {id} of {} was never granted",
                            rfc(payment.created_at)
                        ),
                    );
                }
                pass_ok = false;
                continue;
            };
            let applied_at = grant.applied_at.map_or(0, |at| at.unix_seconds());
            if grant.user_id.as_str() != user {
                self.violation(
                    &user,
                    "(b) access to another",
                    format!("pass payment {id} granted to {}", grant.user_id),
                );
            }
            if applied_at - payment.created_at > REPAIR_WINDOW_SECONDS {
                self.violation(
                    &user,
                    "(a) paid, no access",
                    format!(
                        "pass payment {id} of {} granted only at {}",
                        rfc(payment.created_at),
                        rfc(applied_at)
                    ),
                );
            }
            if i64::from(grant.days) != payment.days() {
                self.violation(
                    &user,
                    "(c) granted ≠ paid",
                    format!(
                        "pass payment {id} bought {} days, granted {}",
                        payment.days(),
                        grant.days
                    ),
                );
            }
            let claims = claims_of.remove(&id).unwrap_or_default();
            // What the stored claims say, judged by the documented rule (the book,
            // "Webhook": a full refund, a dispute lost or accepted, takes back what the
            // payment granted; a partial refund changes nothing) — not the store's own
            // verdict.
            let stored_revokes = claims.fully_refunded
                || matches!(
                    claims.dispute_status.as_deref(),
                    Some("dispute_lost" | "dispute_accepted")
                );
            let taken_back_at = truth.taken_back_at(&id);
            match (taken_back_at, stored_revokes) {
                (Some(at), false) if now - at >= REPAIR_WINDOW_SECONDS => {
                    self.violation(
                        &user,
                        "(b) refunded, still paid",
                        format!("payment {id} was refunded or lost in a dispute at {}, its days are still granted", rfc(at)),
                    );
                    pass_ok = false;
                }
                (Some(_), false) => pass_ok = false,
                (None, true) => {
                    self.violation(
                        &user,
                        "(a) paid, no access",
                        format!("payment {id} was taken back without a refund or lost dispute"),
                    );
                    pass_ok = false;
                }
                _ => {}
            }
            let revoked_at = stored_revokes
                .then(|| claims.updated_at.map_or(applied_at, |at| at.unix_seconds()));
            for (plan, days) in payment.days_by_plan {
                let seconds = days * DAY;
                match revoked_at {
                    // Taken back before it was granted: granted as revoked (no days).
                    Some(at) if at <= applied_at => steps.push((plan, applied_at, 0, true)),
                    Some(at) => {
                        steps.push((plan.clone(), applied_at, seconds, true));
                        steps.push((plan, at, -seconds, false));
                    }
                    None => steps.push((plan, applied_at, seconds, true)),
                }
            }
        }
        let steps_taken = !steps.is_empty();
        // Access runs while any plan's time does: until the latest of them.
        let pass_until = pass_expiries(steps).into_values().max();
        let trial_ends = self.users[index].trials.iter().map(|t| t.until);
        self.users[index].next_boundary = Truth::next_boundary(now, pass_until)
            .into_iter()
            .chain(trial_ends.filter(|until| *until > now))
            .min();
        self.users[index].watch = self.watch_moments(index, &truth, now);
        let Ok(user_id) = UserId::parse(&user) else {
            return;
        };
        // The stored pass expiry (only someone who paid for a pass can have one; the
        // status below shows any access the others are given): the latest of the plans'.
        let stored_until = if steps_taken {
            match self.store.get_account(&user_id).await {
                Ok(account) => account
                    .profile
                    .as_ref()
                    .and_then(|p| p.paid_until)
                    .map(|until| until.unix_seconds()),
                Err(err) => {
                    self.violation(&user, "store", format!("cannot read the account: {err}"));
                    return;
                }
            }
        } else {
            None
        };
        if pass_ok
            && stored_until != pass_until
            && (pass_until.is_some() || stored_until.is_some_and(|u| u > now))
        {
            self.violation(
                &user,
                "(c) granted ≠ paid",
                format!(
                    "pass access until {} where the payments give {}",
                    stored_until.map_or("none".into(), rfc),
                    pass_until.map_or("none".into(), rfc)
                ),
            );
        }

        // Subscriptions, and what the frontend is told.
        let expected_sub = truth.subscription_access(now);
        let pass_live = pass_until.filter(|until| *until > now);
        // A card-less trial gives its plan from its start for its days while nothing paid
        // does (the book: it "grants the plan's features and limits until it ends"; status
        // `trialing`, "a trial gives access until `trial_ends_at`"); what is paid speaks
        // over it ("buying a plan before converts it").
        let trial_live = self.users[index]
            .trials
            .iter()
            .filter(|t| t.from <= now && now < t.until)
            .map(|t| t.until)
            .max();
        let expected_paid = pass_live.is_some() || expected_sub.is_some() || trial_live.is_some();
        let expected_until = match expected_sub {
            Some((until, _)) => Some(until.max(pass_live.unwrap_or(until))),
            None => pass_live.or(trial_live),
        };
        let token = self.token(index);
        let Ok(answer) = self
            .http
            .get(format!("{}/payment/status", self.base))
            .bearer_auth(&token)
            .send()
            .await
        else {
            self.violation(&user, "status", "the status route did not answer".into());
            return;
        };
        let Ok(view) = answer.json::<Value>().await else {
            self.violation(
                &user,
                "status",
                "the status route did not answer JSON".into(),
            );
            return;
        };
        let has_paid = view["has_paid"].as_bool().unwrap_or(false);
        let shown_until = view["plan_expires_at"].as_str().and_then(parse_time);
        // At any moment, repair window or not:
        self.check_trial_shown(index, &truth, &view, now);
        self.check_scheduled_change(index, &truth, &view, now);
        if !settled {
            return; // within the repair window: reconcile has not had its chance yet
        }
        // (g) the plan shown is the plan Dodo's subscription is on, when one subscription
        // alone gives access (no pass beside it: the book, entitlements: "an active
        // `subscription` first, then a `pass`", and a pass holder's subscription runs
        // beside the pass).
        let giving = truth.subscriptions_giving_access(now);
        if pass_live.is_none()
            && let [subscription] = giving.as_slice()
            && let Some(plan) = subscription["product_id"]
                .as_str()
                .and_then(|p| self.plans.name_of(p))
            && view["plan"] != plan.as_str()
        {
            self.violation(
                &user,
                "(g) plan shown ≠ Dodo's",
                format!(
                    "Dodo's subscription {} is on {plan}, the paywall shows {} ({view})",
                    subscription["subscription_id"], view["plan"]
                ),
            );
        }
        match (expected_paid, has_paid) {
            (true, false) => self.violation(
                &user,
                "(a) paid, no access",
                format!(
                    "Dodo says paid until {}, the paywall says not paid ({view})",
                    expected_until.map_or("?".into(), rfc)
                ),
            ),
            (false, true) => self.violation(
                &user,
                "(b) access not paid for",
                format!(
                    "Dodo says nothing is paid, the paywall grants until {} ({view})",
                    shown_until.map_or("?".into(), rfc)
                ),
            ),
            (true, true) if shown_until != expected_until => {
                // A cancellation (or its undoing) whose webhook was lost is seen when
                // reconcile checks the renewal: until then the paywall still counts the
                // renewal grace (or not).
                let cancel_lag = truth.lost_cancellation_explains(
                    now,
                    pass_live,
                    shown_until,
                    view["cancel_at_period_end"].as_bool(),
                );
                if !cancel_lag {
                    self.violation(
                        &user,
                        "(c) granted ≠ paid",
                        format!(
                            "access until {} where Dodo's state gives {} ({view})",
                            shown_until.map_or("none".into(), rfc),
                            expected_until.map_or("none".into(), rfc)
                        ),
                    );
                }
            }
            _ => {}
        }
    }

    /// (e): every applied delivery in its user's audit trail, exactly once.
    async fn check_audit(&mut self) {
        let deliveries = self.simulator.deliveries();
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut trails: HashMap<String, BTreeSet<String>> = HashMap::new();
        for user in self.users.iter().map(|u| u.id.clone()).collect::<Vec<_>>() {
            let Ok(id) = UserId::parse(&user) else {
                continue;
            };
            let trail = match self.store.audit_trail(&id).await {
                Ok(trail) => trail,
                Err(err) => {
                    self.violation(
                        &user,
                        "store",
                        format!("cannot read the audit trail: {err}"),
                    );
                    continue;
                }
            };
            for entry in trail {
                *seen.entry(entry.webhook_id.clone()).or_default() += 1;
                trails
                    .entry(user.clone())
                    .or_default()
                    .insert(entry.webhook_id);
            }
        }
        for (webhook_id, count) in &seen {
            if *count > 1 {
                self.violation(
                    "-",
                    "(e) audit",
                    format!("delivery {webhook_id} is in the audit trail {count} times"),
                );
            }
        }
        let applied = [
            "granted",
            "applied",
            "revoked",
            "restored",
            "subscription_payment",
        ];
        let missing: Vec<(String, String)> = deliveries
            .iter()
            .filter(|d| (200..300).contains(&d.status))
            .filter(|d| d.outcome.as_deref().is_some_and(|o| applied.contains(&o)))
            .filter_map(|d| {
                let user = self.simulator.owner_of(&d.object_id)?;
                let listed = trails.get(&user).is_some_and(|t| t.contains(&d.webhook_id));
                (!listed).then(|| {
                    (
                        user,
                        format!(
                            "{} {} ({})",
                            d.event_type,
                            d.webhook_id,
                            d.outcome.clone().unwrap_or_default()
                        ),
                    )
                })
            })
            .collect();
        for (user, delivery) in missing {
            self.violation(
                &user,
                "(e) audit",
                format!("applied delivery {delivery} is not in the audit trail"),
            );
        }
    }
}

/// A browser's form post (the values here are plain words: nothing to escape).
async fn post_form(
    http: &reqwest::Client,
    url: &str,
    fields: &[(&str, &str)],
) -> Result<reqwest::Response, reqwest::Error> {
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    http.post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.join("&"))
        .send()
        .await
}

/// One trial someone had, for (j).
pub struct TrialTaken {
    pub plan: String,
    pub user: String,
    pub email: String,
    /// What it was, for the report.
    pub what: String,
    /// Dodo's subscription, for Dodo's trials.
    pub subscription: Option<String>,
}

/// (j): each second trial of a plan by one account, or by one mailbox: (the first, the
/// second, detail), as indices in `trials`.
pub fn trials_taken_twice(trials: &[TrialTaken]) -> Vec<(usize, usize, String)> {
    let mut found = Vec::new();
    let mut by_user: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut by_mailbox: BTreeMap<(&str, String), usize> = BTreeMap::new();
    for (index, trial) in trials.iter().enumerate() {
        if let Some(first) = by_user.insert((&trial.plan, &trial.user), index) {
            let detail = format!(
                "two trials of {}: {}, and {}",
                trial.plan, trials[first].what, trial.what
            );
            found.push((first, index, detail));
            continue;
        }
        let person = mailbox(&trial.email);
        if let Some(first) = by_mailbox.insert((&trial.plan, person.clone()), index) {
            let earlier = &trials[first];
            let detail = format!(
                "two trials of {} for the mailbox {person}: {} ({}, {}), and {} ({}, {})",
                trial.plan,
                earlier.what,
                earlier.user,
                earlier.email,
                trial.what,
                trial.user,
                trial.email
            );
            found.push((first, index, detail));
        }
    }
    found
}

/// Where a subscription's payment's period starts (its `service_periods`).
fn period_start(payment: &Value) -> Option<i64> {
    payment["service_periods"]
        .as_array()?
        .first()
        .and_then(|p| seconds(p, "starts_at"))
}

/// (k): each period of a subscription charged twice in full. A whole-period charge is a
/// succeeded `new` or `renewal` payment, or a `plan_change` one billed as the whole
/// period (its proration 1: a scheduled change replacing the renewal); a prorated
/// change is its own kind and pays for no period of its own.
pub fn periods_charged_twice(payments: &[Value]) -> Vec<String> {
    let mut seen: BTreeMap<(String, i64), String> = BTreeMap::new();
    let mut found = Vec::new();
    for payment in payments.iter().filter(|p| p["status"] == "succeeded") {
        let whole = match payment["charge_type"].as_str() {
            Some("new" | "renewal") => true,
            Some("plan_change") => {
                payment["service_periods"][0]["proration_factor"].as_str() == Some("1")
            }
            _ => false,
        };
        let (Some(subscription), Some(start)) =
            (payment["subscription_id"].as_str(), period_start(payment))
        else {
            continue;
        };
        if !whole {
            continue;
        }
        let id = payment["payment_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if let Some(first) = seen.insert((subscription.to_owned(), start), id.clone()) {
            found.push(format!(
                "{subscription}'s period from {} was charged by {first} and by {id}",
                rfc(start)
            ));
        }
    }
    found
}

/// A `2xx` answer's JSON body; `None` for anything else.
async fn ok_json(answer: Result<reqwest::Response, reqwest::Error>) -> Option<Value> {
    let answer = answer.ok()?;
    if !answer.status().is_success() {
        return None;
    }
    answer.json().await.ok()
}

/// A subscription's scheduled plan change in Dodo's record: the product it moves to, and
/// when (its `effective_at`, else the next billing date).
fn scheduled_change(subscription: &Value) -> Option<(String, i64)> {
    let change = subscription.get("scheduled_change")?;
    let product = change.get("product_id")?.as_str()?.to_owned();
    let at =
        seconds(change, "effective_at").or_else(|| seconds(subscription, "next_billing_date"))?;
    Some((product, at))
}

/// The mailboxes whose `+tag` is ignored, as the book names them ("Gmail, Outlook, iCloud,
/// Fastmail, Proton"): their domains.
const PLUS_TAG_MAILBOXES: &[&str] = &[
    "gmail.com",
    "outlook.com",
    "icloud.com",
    "fastmail.com",
    "proton.me",
    "protonmail.com",
];

/// The mailbox an e-mail reaches, by the book's words ("One trial per person and plan":
/// "compared normalised: lower case; a `+tag` dropped where the mailbox ignores it
/// (Gmail, Outlook, iCloud, Fastmail, Proton); Gmail's dots dropped and
/// `googlemail.com` read as `gmail.com`") — the checker's own, never the paywall's.
pub fn mailbox(email: &str) -> String {
    let email = email.trim().to_lowercase();
    let Some((local, domain)) = email.rsplit_once('@') else {
        return email;
    };
    let domain = if domain == "googlemail.com" {
        "gmail.com"
    } else {
        domain
    };
    let mut local = local.to_owned();
    if PLUS_TAG_MAILBOXES.contains(&domain) {
        local = local.split('+').next().unwrap_or_default().to_owned();
    }
    if domain == "gmail.com" {
        local = local.replace('.', "");
    }
    format!("{local}@{domain}")
}

/// Another way of writing a Gmail user's mailbox, for a second account of theirs: dots,
/// a `+tag`, capitals, googlemail.com.
fn gmail_variant(email: &str, seed: usize) -> String {
    let person = mailbox(email);
    let local = person.split('@').next().unwrap_or_default();
    match seed % 3 {
        0 => format!("{}+team@googlemail.com", local.to_uppercase()),
        1 => {
            let (head, tail) = local.split_at(local.len().min(2));
            format!("{head}.{tail}+{seed}@gmail.com")
        }
        _ => format!("{}.@Gmail.com", local.replace('r', ".r")).replace(".@", "@"),
    }
}

/// Unix seconds as RFC 3339 UTC, `2027-01-04T00:00:00Z` (the checker's own calendar:
/// Howard Hinnant's `civil_from_days`, proleptic Gregorian).
fn rfc(seconds: i64) -> String {
    let days = seconds.div_euclid(DAY);
    let time = seconds.rem_euclid(DAY);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        time / 3600,
        time % 3600 / 60,
        time % 60
    )
}

/// RFC 3339 (`2027-01-04T00:00:00Z`, `…:00.123Z`, `…:00+02:00`) as unix seconds, the
/// fraction dropped: the checker's own reading of the times Dodo and the paywall send.
fn parse_time(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let number = |from: usize, to: usize| -> Option<i64> {
        let part = text.get(from..to)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (year, month, day) = (number(0, 4)?, number(5, 7)?, number(8, 10)?);
    let (hour, minute, second) = (number(11, 13)?, number(14, 16)?, number(17, 19)?);
    let separators_ok = b.get(4) == Some(&b'-')
        && b.get(7) == Some(&b'-')
        && matches!(b.get(10), Some(b'T' | b't' | b' '))
        && b.get(13) == Some(&b':')
        && b.get(16) == Some(&b':');
    if !separators_ok
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &fraction[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            let hours: i64 = rest[1..3].parse().ok()?;
            let minutes: i64 = rest[4..6].parse().ok()?;
            sign * (hours * 3600 + minutes * 60)
        }
    };
    // Howard Hinnant's `days_from_civil`.
    let y = year - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * DAY + hour * 3600 + minute * 60 + second - offset)
}

async fn session_of(answer: Result<reqwest::Response, reqwest::Error>) -> Option<Value> {
    let answer = answer.ok()?;
    if !answer.status().is_success() {
        return None;
    }
    answer.json().await.ok()
}

/// Each pass plan's expiry from its grants and take-backs `(plan, at, seconds, grant?)`:
/// a grant extends the plan's own expiry from the later of when it was applied and that
/// expiry (the book, "Money rules": "A new pass extends from the later of now and the
/// current expiry"); a take-back removes the payment's seconds (the book: "a full refund
/// of a pass takes back its days; a lost dispute takes them back"). A pass of one plan
/// never moves another plan's time.
fn pass_expiries(mut steps: Vec<(String, i64, i64, bool)>) -> BTreeMap<String, i64> {
    steps.sort_by_key(|(_, at, _, grant)| (*at, !*grant));
    let mut until_by_plan: BTreeMap<String, i64> = BTreeMap::new();
    for (plan, at, seconds, grant) in steps {
        let until = until_by_plan.get(&plan).copied();
        let next = if grant {
            until.map_or(at, |until| until.max(at)) + seconds
        } else {
            until.unwrap_or(at) + seconds
        };
        until_by_plan.insert(plan, next);
    }
    until_by_plan
}

fn seconds(value: &Value, key: &str) -> Option<i64> {
    value.get(key).and_then(Value::as_str).and_then(parse_time)
}

/// One plan the simulation sells, as the founder's catalogue states it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SoldPlan {
    name: String,
    product_id: String,
    /// A pass's days per payment; `None` for a subscription.
    pass_days: Option<i64>,
    /// The catalogue's `price`, in cents (`"$9/month"` is 900), if it names one.
    price_cents: Option<i64>,
    /// Its trial, `(days, card)`: `trial_days = N` is Dodo's (a card taken at checkout),
    /// `trial = { days = N, card = false }` the paywall's card-less one.
    trial: Option<(i64, bool)>,
    /// Whether the entry sets `change` (how a subscriber moves to it) or `interval`:
    /// without either, a monthly plan moved to by the documented defaults, so that its
    /// price alone says whether a move to it is an upgrade.
    change_policy: bool,
}

/// The catalogue the stack under test sells, read by the checker from the same text the
/// stack is given, by the book's rules ("Configuration"; "Plans, features and limits"):
/// `PLANS` (JSON); else `plans.toml` when it names a plan; else one plan, `monthly`, a
/// pass of `PLAN_DURATION_DAYS` (default 30) on `DODO_PRODUCT_ID`; and when none of these
/// is set, the local stack's demo catalogue (the book, "Run it locally": "Without a
/// catalogue … sells demo plans": a free tier, a 30-day pass `monthly` and a monthly
/// subscription `pro`; the text is `local_server::DEMO_PLANS`, the stack's input, not the
/// paywall's). The paywall's own parser (`Catalog`) is never asked: a pass's days are
/// what the founder wrote. Sorted by name.
#[derive(Debug, PartialEq, Eq)]
struct Plans(Vec<SoldPlan>);

impl Plans {
    fn from_env() -> Result<Self, String> {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        Self::from_sources(
            var("PLANS").as_deref(),
            PLANS_TOML,
            var("DODO_PRODUCT_ID").as_deref(),
            var("PLAN_DURATION_DAYS").as_deref(),
        )
    }

    fn from_sources(
        plans_json: Option<&str>,
        plans_toml: &str,
        product_id: Option<&str>,
        duration_days: Option<&str>,
    ) -> Result<Self, String> {
        let default_days = match duration_days {
            Some(raw) => raw
                .parse::<i64>()
                .map_err(|_| format!("PLAN_DURATION_DAYS is not a number of days: {raw}"))?,
            None => DEFAULT_PASS_DAYS,
        };
        let entries = match (plans_json, product_id) {
            (Some(json), _) => json_entries(json, "PLANS")?,
            (None, _) if !toml_entries(plans_toml)?.is_empty() => toml_entries(plans_toml)?,
            (None, Some(product)) => BTreeMap::from([(
                DEFAULT_PLAN.to_owned(),
                Entry {
                    product_id: Some(product.to_owned()),
                    kind: Some("pass".to_owned()),
                    days: Some(default_days),
                    ..Entry::default()
                },
            )]),
            (None, None) => json_entries(crate::local_server::DEMO_PLANS, "the demo plans")?,
        };
        let mut plans = Vec::new();
        for (name, entry) in entries {
            if name == FREE_PLAN {
                continue;
            }
            let product_id = entry
                .product_id
                .ok_or_else(|| format!("plan {name} names no product_id"))?;
            let pass_days = match entry.kind.as_deref() {
                Some("pass") => Some(entry.days.unwrap_or(default_days)),
                Some("subscription") => None,
                other => return Err(format!("plan {name}: kind {other:?}")),
            };
            let trial = match (entry.trial, entry.trial_days) {
                (Some(trial), _) => Some(trial),
                (None, Some(days)) => Some((days, true)),
                (None, None) => None,
            };
            plans.push(SoldPlan {
                name,
                product_id,
                pass_days,
                price_cents: entry.price.as_deref().and_then(price_cents),
                trial,
                change_policy: entry.change,
            });
        }
        Ok(Self(plans))
    }

    fn by_product(&self, product_id: &str) -> Option<&SoldPlan> {
        self.0.iter().find(|p| p.product_id == product_id)
    }

    fn named(&self, name: &str) -> Option<&SoldPlan> {
        self.0.iter().find(|p| p.name == name)
    }

    /// The plan a product is, by name (`None`: a product this catalogue does not sell).
    fn name_of(&self, product_id: &str) -> Option<String> {
        self.by_product(product_id).map(|p| p.name.clone())
    }
}

/// A catalogue `price` as cents: `"$9/month"` 900, `"$19"` 1900, `"$4.50"` 450 (the book,
/// "Plans, features and limits": "its amount also ranks plans for upgrades and
/// downgrades"). The checker's own reading: the currency sign, the amount, then anything.
fn price_cents(text: &str) -> Option<i64> {
    let amount = text
        .trim()
        .trim_start_matches(|c: char| !c.is_ascii_digit());
    let end = amount
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(amount.len());
    let (whole, cents) = match amount[..end].split_once('.') {
        Some((whole, cents)) => (whole, format!("{cents:0<2}")),
        None => (&amount[..end], "00".to_owned()),
    };
    Some(whole.parse::<i64>().ok()? * 100 + cents.get(..2)?.parse::<i64>().ok()?)
}

/// The fields of a catalogue entry that say what a payment buys, what it costs, and
/// which trial it offers.
#[derive(Default)]
struct Entry {
    product_id: Option<String>,
    kind: Option<String>,
    days: Option<i64>,
    price: Option<String>,
    trial_days: Option<i64>,
    /// `trial = { days, card }` (`card` is true unless `false`).
    trial: Option<(i64, bool)>,
    change: bool,
}

fn json_entries(text: &str, source: &str) -> Result<BTreeMap<String, Entry>, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("{source} is not JSON: {e}"))?;
    let object = value
        .as_object()
        .ok_or_else(|| format!("{source} is not a JSON object"))?;
    Ok(object
        .iter()
        .map(|(name, plan)| {
            let text = |key: &str| plan[key].as_str().map(str::to_owned);
            let entry = Entry {
                product_id: text("product_id"),
                kind: text("kind"),
                days: plan["days"].as_i64(),
                price: text("price"),
                trial_days: plan["trial_days"].as_i64(),
                trial: plan["trial"]["days"]
                    .as_i64()
                    .map(|days| (days, plan["trial"]["card"] != false)),
                change: plan.get("change").is_some() || plan.get("interval").is_some(),
            };
            (name.clone(), entry)
        })
        .collect())
}

/// The plans in `plans.toml`: each `[name]` table's `product_id`, `kind` and `days`
/// (the only keys that say what a payment buys; the rest, features, limits and price,
/// are skipped line by line). Enough TOML for the catalogue's documented shape.
fn toml_entries(text: &str) -> Result<BTreeMap<String, Entry>, String> {
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    let mut current: Option<String> = None;
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(table) = line.strip_prefix('[') {
            let name = table
                .split(']')
                .next()
                .unwrap_or_default()
                .trim()
                .trim_matches('"');
            entries.entry(name.to_owned()).or_default();
            current = Some(name.to_owned());
            continue;
        }
        let (Some(name), Some((key, value))) = (&current, line.split_once('=')) else {
            continue;
        };
        let key = key.trim();
        let value = value.trim();
        let string = || {
            let quote = value.chars().next().filter(|c| *c == '"' || *c == '\'')?;
            let inner = &value[1..];
            inner.find(quote).map(|end| inner[..end].to_owned())
        };
        let entry = entries.entry(name.clone()).or_default();
        let bad = || format!("plans.toml line {}: {key} = {value}", number + 1);
        match key {
            "product_id" => entry.product_id = Some(string().ok_or_else(bad)?),
            "kind" => entry.kind = Some(string().ok_or_else(bad)?),
            "days" | "trial_days" => {
                let digits = value.split('#').next().unwrap_or_default().trim();
                let days = Some(digits.replace('_', "").parse().map_err(|_| bad())?);
                if key == "days" {
                    entry.days = days;
                } else {
                    entry.trial_days = days;
                }
            }
            "price" => entry.price = Some(string().ok_or_else(bad)?),
            "change" | "interval" => entry.change = true,
            // `trial = { days = 14, card = false }`, on one line.
            "trial" => {
                let inner = value
                    .split('#')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .trim_start_matches('{')
                    .trim_end_matches('}');
                let mut days = None;
                let mut card = true;
                for pair in inner.split(',') {
                    match pair.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
                        Some(("days", v)) => {
                            days = Some(v.replace('_', "").parse().map_err(|_| bad())?)
                        }
                        Some(("card", v)) => card = v != "false",
                        _ => {}
                    }
                }
                entry.trial = Some((days.ok_or_else(bad)?, card));
            }
            _ => {}
        }
    }
    Ok(entries)
}

struct PassPayment {
    id: String,
    created_at: i64,
    /// The days its cart bought, per pass plan.
    days_by_plan: BTreeMap<String, i64>,
}

impl PassPayment {
    fn days(&self) -> i64 {
        self.days_by_plan.values().sum()
    }
}

/// What Dodo knows about one user, and the documented rules applied to it.
struct Truth(UserTruth);

impl Truth {
    fn of(simulator: &DodoSimulator, user: &str) -> Self {
        Self(simulator.user_truth(user))
    }

    fn refunded_at(&self, payment_id: &str) -> Option<i64> {
        self.0
            .refunds
            .get(payment_id)
            .filter(|r| r["status"] == "succeeded" && r["is_partial"] != true)
            .and_then(|r| seconds(r, "created_at"))
    }

    fn dispute_lost_at(&self, payment_id: &str) -> Option<i64> {
        self.0
            .disputes
            .get(payment_id)
            .filter(|d| d["dispute_status"] == "dispute_lost")
            .and_then(|d| seconds(d, "updated_at"))
    }

    /// The pass payments Dodo took from the user: a cart of pass products.
    /// The book, "Money rules": a payment buys only what its own `product_cart` says; "a
    /// pass line grants the plan's days times its quantity".
    fn pass_payments(&self, plans: &Plans) -> Vec<PassPayment> {
        self.0
            .payments
            .iter()
            .filter(|p| p["status"] == "succeeded")
            .filter_map(|p| {
                let lines = p["product_cart"].as_array()?;
                let mut days_by_plan: BTreeMap<String, i64> = BTreeMap::new();
                for line in lines {
                    let Some(plan) = line["product_id"]
                        .as_str()
                        .and_then(|p| plans.by_product(p))
                    else {
                        continue;
                    };
                    let Some(days) = plan.pass_days else {
                        continue;
                    };
                    *days_by_plan.entry(plan.name.clone()).or_default() +=
                        days * line["quantity"].as_i64().unwrap_or(1);
                }
                days_by_plan.retain(|_, days| *days > 0);
                (!days_by_plan.is_empty()).then(|| PassPayment {
                    id: p["payment_id"].as_str().unwrap_or_default().to_owned(),
                    created_at: seconds(p, "created_at").unwrap_or_default(),
                    days_by_plan,
                })
            })
            .collect()
    }

    /// When the payment's money went back (a full refund, a lost dispute), if it did.
    fn taken_back_at(&self, payment_id: &str) -> Option<i64> {
        match (
            self.refunded_at(payment_id),
            self.dispute_lost_at(payment_id),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The user's latest succeeded payment that was neither refunded nor disputed.
    fn latest_claimable_payment(&self) -> Option<String> {
        self.0
            .payments
            .iter()
            .filter(|p| p["status"] == "succeeded")
            .filter_map(|p| {
                Some((
                    seconds(p, "created_at")?,
                    p["payment_id"].as_str()?.to_owned(),
                ))
            })
            .filter(|(_, id)| !self.0.refunds.contains_key(id) && !self.0.disputes.contains_key(id))
            .max()
            .map(|(_, id)| id)
    }

    /// Until when the user's subscriptions give access by the documented rules, and
    /// whether that one ends at period end: active and renewing, until the period's end
    /// plus the renewal grace; set to cancel, or cancelled, until the period's end; on
    /// hold, none; none either after a refund or a lost dispute of the payment for the
    /// current period.
    fn subscription_access(&self, now: i64) -> Option<(i64, bool)> {
        self.subscription_accesses(now, None).into_iter().max()
    }

    /// The access each subscription gives (until, set to cancel), as Dodo's state says;
    /// with `flipped`, as the paywall counts it while the webhook that set (or unset) that
    /// subscription's cancellation is lost: with the renewal grace, or without.
    fn subscription_accesses(&self, now: i64, flipped: Option<&str>) -> Vec<(i64, bool)> {
        self.subscription_grants(now, flipped)
            .into_iter()
            .map(|(until, cancel, _)| (until, cancel))
            .collect()
    }

    /// The subscriptions that give access now by Dodo's state.
    fn subscriptions_giving_access(&self, now: i64) -> Vec<&Value> {
        self.subscription_grants(now, None)
            .into_iter()
            .map(|(_, _, s)| s)
            .collect()
    }

    /// Whether the subscription is on Dodo's trial: created with `trial_period_days` and
    /// not charged yet (the book, "Trials": "Dodo has no trial status, so the paywall derives
    /// it: a subscription created with `trial_period_days` is on trial until its first
    /// charge"). Its access then runs as any active subscription's: to its
    /// `next_billing_date` (the trial's end), plus the renewal grace while set to renew.
    fn on_dodo_trial(&self, subscription: &Value) -> bool {
        subscription["trial_period_days"].as_i64().unwrap_or(0) > 0
            && !self.0.payments.iter().any(|p| {
                p["subscription_id"] == subscription["subscription_id"]
                    && p["status"] == "succeeded"
            })
    }

    /// Each subscription giving access: (until, set to cancel, the subscription).
    fn subscription_grants(&self, now: i64, flipped: Option<&str>) -> Vec<(i64, bool, &Value)> {
        self.0
            .subscriptions
            .iter()
            .filter_map(|s| {
                let id = s["subscription_id"].as_str()?;
                let next = seconds(s, "next_billing_date")?;
                let cancel = s["cancel_at_next_billing_date"] == true;
                let counted_cancel = cancel != (flipped == Some(id));
                let until = match s["status"].as_str()? {
                    "active" if !counted_cancel => next + RENEWAL_GRACE_SECONDS,
                    "active" | "cancelled" => next,
                    _ => return None,
                };
                let paid: Vec<(i64, &str)> = self
                    .0
                    .payments
                    .iter()
                    .filter(|p| p["subscription_id"] == id && p["status"] == "succeeded")
                    .filter(|p| pays_a_period(p))
                    .filter_map(|p| Some((seconds(p, "created_at")?, p["payment_id"].as_str()?)))
                    .collect();
                // A full refund or a lost dispute of the payment for the current period
                // ends it, until the next period is paid (the book, Money rules: "A lost
                // dispute or a full refund of a subscription's payment for its current
                // period ends that subscription's access until the next period is paid").
                let period_start = seconds(s, "previous_billing_date").unwrap_or(i64::MIN);
                if paid.iter().max().is_some_and(|(at, latest)| {
                    (self.refunded_at(latest).is_some() || self.dispute_lost_at(latest).is_some())
                        && at + PERIOD_PAYMENT_SLACK_SECONDS >= period_start
                }) {
                    return None;
                }
                (until > now).then_some((until, counted_cancel, s))
            })
            .collect()
    }

    /// Whether what the paywall shows (`shown_until`, `shown_cancel`) is Dodo's state but
    /// for one active subscription's cancellation (or its undoing), whose webhook was lost
    /// and which reconcile reads when that subscription's period ends. The subscription
    /// concerned need not be the one that gives the longest access in Dodo's state (a
    /// pass, or another subscription, may outlast it): each active one is tried.
    fn lost_cancellation_explains(
        &self,
        now: i64,
        pass_live: Option<i64>,
        shown_until: Option<i64>,
        shown_cancel: Option<bool>,
    ) -> bool {
        self.active_subscription_ids().iter().any(|id| {
            let lagged = self.subscription_accesses(now, Some(id)).into_iter().max();
            let lagged_until = match lagged {
                Some((until, _)) => Some(until.max(pass_live.unwrap_or(until))),
                None => pass_live,
            };
            lagged_until == shown_until
                && lagged.is_some_and(|(_, cancel)| shown_cancel == Some(cancel))
        })
    }

    /// The active subscriptions' ids (those a lost cancellation webhook can concern).
    fn active_subscription_ids(&self) -> Vec<String> {
        self.0
            .subscriptions
            .iter()
            .filter(|s| s["status"] == "active")
            .filter_map(|s| s["subscription_id"].as_str().map(str::to_owned))
            .collect()
    }

    /// The next moment after `now` when access changes with no word from Dodo: a pass
    /// ending. (At a period's end Dodo renews, holds or cancels, which is an event; a
    /// renewal grace that ends unrepaired shows when the repair window closes.)
    fn next_boundary(now: i64, pass_until: Option<i64>) -> Option<i64> {
        pass_until.filter(|t| *t > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_pass_plan_keeps_its_own_time() {
        let step =
            |plan: &str, at: i64, days: i64, grant: bool| (plan.to_owned(), at, days * DAY, grant);
        let t = 1_000 * DAY;
        // A 30-day pass, then a 7-day pass of another plan a day later: each runs on its
        // own (not 37 days of the second plan); a second 30-day pass extends the first
        // from its expiry; a refund of the second takes its 7 days back.
        let expiries = pass_expiries(vec![
            step("week", t + DAY, 7, true),
            step("month", t, 30, true),
            step("month", t + 2 * DAY, 30, true),
            step("week", t + 3 * DAY, -7, false),
        ]);
        assert_eq!(
            expiries,
            BTreeMap::from([
                ("month".to_owned(), t + 60 * DAY),
                ("week".to_owned(), t + DAY)
            ])
        );
        // Bought after the first ran out: from when it was applied.
        let expiries = pass_expiries(vec![
            step("month", t, 30, true),
            step("month", t + 40 * DAY, 30, true),
        ]);
        assert_eq!(expiries["month"], t + 70 * DAY);
    }

    #[test]
    fn the_checker_reads_and_writes_times_itself() {
        for (text, seconds) in [
            ("2027-01-04T00:00:00Z", 1_799_020_800),
            ("2024-02-29T23:59:59Z", 1_709_251_199),
            ("1969-12-31T00:00:00Z", -86_400),
        ] {
            assert_eq!(parse_time(text), Some(seconds), "{text}");
            assert_eq!(rfc(seconds), text);
        }
        assert_eq!(
            parse_time("2026-11-28T04:35:26.123Z"),
            parse_time("2026-11-28T04:35:26Z")
        );
        assert_eq!(parse_time("2026-11-28T04:35:26+02:00"), Some(1_795_833_326));
        for bad in [
            "",
            "2026-11-28",
            "2026-13-01T00:00:00Z",
            "2026-11-28T04:35:26",
            "x",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_checker_reads_the_catalogue_as_the_founder_wrote_it() {
        let pass = |name: &str, product: &str, days| SoldPlan {
            name: name.into(),
            product_id: product.into(),
            pass_days: Some(days),
            price_cents: None,
            trial: None,
            change_policy: false,
        };
        let subscription = |name: &str, product: &str| SoldPlan {
            name: name.into(),
            product_id: product.into(),
            pass_days: None,
            price_cents: None,
            trial: None,
            change_policy: false,
        };
        let priced = |plan: SoldPlan, cents| SoldPlan {
            price_cents: Some(cents),
            ..plan
        };
        let trying = |plan: SoldPlan, days, card| SoldPlan {
            trial: Some((days, card)),
            ..plan
        };
        // Nothing configured: the local stack's demo plans, with their prices and trials.
        assert_eq!(
            Plans::from_sources(None, "", None, None),
            Ok(Plans(vec![
                priced(pass("monthly", "pdt_local_demo", 30), 1900),
                priced(subscription("pro", "pdt_local_pro"), 4900),
                trying(
                    priced(subscription("starter", "pdt_local_starter"), 900),
                    7,
                    true
                ),
                trying(
                    priced(subscription("team", "pdt_local_team"), 9900),
                    14,
                    false
                ),
            ]))
        );
        // The book's example file, in TOML.
        let example = include_str!("../../plans.example.toml");
        assert_eq!(
            Plans::from_sources(None, example, Some("pdt_ignored"), None),
            Ok(Plans(vec![
                priced(pass("monthly", "pdt_monthly_pass", 30), 1900),
                trying(
                    priced(subscription("pro", "pdt_pro_subscription"), 4900),
                    14,
                    true
                ),
            ]))
        );
        // Trials and prices written in TOML, both ways.
        let toml = "[s]\nproduct_id = \"pdt_s\"\nkind = \"subscription\"\nprice = \"$4.5/week\"\n\
                    trial_days = 7\n[t]\nproduct_id = \"pdt_t\"\nkind = \"subscription\"\n\
                    trial = { days = 14, card = false } # no card\nchange = { upgrade = \"immediately\" }\n";
        assert_eq!(
            Plans::from_sources(None, toml, None, None),
            Ok(Plans(vec![
                trying(priced(subscription("s", "pdt_s"), 450), 7, true),
                SoldPlan {
                    change_policy: true,
                    ..trying(subscription("t", "pdt_t"), 14, false)
                },
            ]))
        );
        // `PLANS` wins over the file; a pass without days takes PLAN_DURATION_DAYS.
        let json = r#"{"week": {"product_id": "pdt_w", "kind": "pass", "days": 7},
                       "year": {"product_id": "pdt_y", "kind": "pass"}}"#;
        assert_eq!(
            Plans::from_sources(Some(json), example, None, Some("365")),
            Ok(Plans(vec![
                pass("week", "pdt_w", 7),
                pass("year", "pdt_y", 365)
            ]))
        );
        // The original's single pass.
        assert_eq!(
            Plans::from_sources(None, "# empty\n", Some("pdt_a"), Some("14")),
            Ok(Plans(vec![pass("monthly", "pdt_a", 14)]))
        );
        let toml = "[a]\nproduct_id = 'pdt_a' # mine\nkind = \"pass\"\ndays = 1_0\n\
                    features = [\n  \"x\",\n]\nlimits = { days = 3 }\n";
        assert_eq!(
            Plans::from_sources(None, toml, None, None),
            Ok(Plans(vec![pass("a", "pdt_a", 10)]))
        );
    }

    /// Found by the 5,000-user year (u04154): a pass outlasts, in Dodo's state, a
    /// subscription set to cancel; the "cancel" webhook was lost, so the paywall still
    /// counts that subscription's renewal grace, which outlasts the pass. Reconcile reads
    /// the subscription at its period's end: until then this is the documented lag, and
    /// anything else is still a violation.
    #[test]
    fn a_lost_cancellation_behind_a_longer_pass_is_the_documented_lag() {
        use crate::dodo_simulator::UserTruth;
        let at = |t: &str| parse_time(t).expect("a time");
        let truth = Truth(UserTruth {
            subscriptions: vec![json!({
                "subscription_id": "sub_1", "status": "active",
                "next_billing_date": "2027-04-09T19:14:38Z",
                "previous_billing_date": "2027-03-09T19:14:38Z",
                "cancel_at_next_billing_date": true,
            })],
            payments: vec![json!({
                "payment_id": "pay_s", "subscription_id": "sub_1", "status": "succeeded",
                "created_at": "2027-03-09T19:14:38Z",
            })],
            refunds: Default::default(),
            disputes: Default::default(),
            last_event_ms: None,
        });
        let now = at("2027-04-05T00:00:00Z");
        let pass = Some(at("2027-04-09T21:52:14Z"));
        assert_eq!(
            truth.subscription_access(now),
            Some((at("2027-04-09T19:14:38Z"), true))
        );
        // What the paywall showed: the subscription's grace, not set to cancel.
        let shown = Some(at("2027-04-10T19:14:38Z"));
        assert!(truth.lost_cancellation_explains(now, pass, shown, Some(false)));
        // Not explained: the grace but shown as cancelling; or any other expiry.
        assert!(!truth.lost_cancellation_explains(now, pass, shown, Some(true)));
        let other = Some(at("2027-04-11T19:14:38Z"));
        assert!(!truth.lost_cancellation_explains(now, pass, other, Some(false)));
        // Once the period has ended (Dodo cancelled it), nothing is explained by the lag.
        let mut ended = truth;
        ended.0.subscriptions[0]["status"] = json!("cancelled");
        let later = at("2027-04-09T20:00:00Z");
        assert!(!ended.lost_cancellation_explains(later, None, shown, Some(false)));
    }
}
