//! `cargo run -p dev -- cost`: what the stack costs a month in the founder's AWS account,
//! per service, from three inputs kept in the repository:
//! - `dev/cost/measured.toml`: per route, the AWS calls, DynamoDB units, billed duration
//!   and log bytes one request spends (written by the bench: `lambda-bench --costs-only --write-measured`);
//! - `dev/cost/prices.toml`: AWS's public on-demand prices and the peers' published
//!   pricing, dated, with their sources;
//! - `template.yaml`: what the stack deploys (alarms, secrets, the access-log format,
//!   point-in-time recovery, log retention, API throttling), read rather than copied.
//!
//! Everything here is a pure function of those inputs and the traffic the founder states,
//! so the unit tests can check the arithmetic against hand-computed dollars.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Deserialize;

pub const USAGE: &str = "usage: cargo run -p dev -- cost --mau N --checks-per-user-day C --usage-per-user-day U
    [--purchases-per-month P | --paying-share X]   payments a month (default: --paying-share 0.05)
    [--region R]                 prices.toml's [regions.R] overrides (default us-east-1)
    [--arch arm64|x86_64]        the functions' architecture (default arm64, as template.yaml)
    [--secrets-manager]          SecretsSource=secrets-manager: GetSecretValue at each cold start
    [--access-events-webhook]    AccessEventsWebhookUrl set: API destination, its secret, DLQ alarm
    [--free-tier]                subtract AWS's always-free allowances (off: the account's are used elsewhere)
    [--bytes-per-user B]         DynamoDB bytes stored per user (default 2048)
    [--revenue-per-payment USD]  for the peers' revenue-based fees (default 10)
    [--prices FILE] [--measured FILE]   (default dev/cost/prices.toml, dev/cost/measured.toml)
    [--table]                    the bill at 1k, 10k, 100k and 1M MAU beside the peers' fees";

/// Months are 30 days: what the per-day knobs are multiplied by.
pub const DAYS_PER_MONTH: f64 = 30.0;
/// template.yaml schedules reconcile `rate(1 hour)`.
pub const RECONCILE_RUNS_PER_MONTH: f64 = 24.0 * DAYS_PER_MONTH;
/// A payment changes one user's access once (granted or extended): one `EVENT#` item, one
/// stream record, one "Access Changed" event.
pub const STATE_CHANGES_PER_PAYMENT: f64 = 1.0;
/// The stream's batching window is 1 s; at a paywall's payment rate nearly every state
/// change is a batch of its own, so the model invokes access-events once per state change
/// (an upper bound: batches only make it cheaper).
pub const BATCHES_PER_STATE_CHANGE: f64 = 1.0;
/// Lambda recycles execution environments; when idle it reclaims them within minutes.
/// The model assumes at most one cold start per function every 10 minutes of the month
/// (and never more than its invocations): what sizes the secrets-manager mode's
/// GetSecretValue calls.
pub const MAX_COLD_STARTS_PER_FUNCTION: f64 = 6.0 * 24.0 * DAYS_PER_MONTH;
/// The routes a payment takes (a new subscription's first payment: the upper bound; a
/// renewal skips the checkout and the success page and sends subscription.renewed).
pub const ROUTES_PER_PAYMENT: [&str; 4] = [
    "create_checkout",
    "success",
    "webhook_payment_succeeded",
    "webhook_subscription_active",
];
/// Bytes in a GB as AWS bills data (GiB).
const GB: f64 = 1024.0 * 1024.0 * 1024.0;
const SECONDS_PER_MONTH: f64 = DAYS_PER_MONTH * 86_400.0;

pub fn prices_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("cost/prices.toml")
}

pub fn measured_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("cost/measured.toml")
}

// ---------------------------------------------------------------------------------------
// prices.toml

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum Arch {
    #[serde(rename = "arm64")]
    Arm64,
    #[serde(rename = "x86_64")]
    X86_64,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Arm64 => "arm64",
            Arch::X86_64 => "x86_64",
        }
    }
}

/// A figure that differs by architecture.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerArch {
    pub arm64: f64,
    pub x86_64: f64,
}

impl PerArch {
    pub fn of(&self, arch: Arch) -> f64 {
        match arch {
            Arch::Arm64 => self.arm64,
            Arch::X86_64 => self.x86_64,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct Prices {
    pub as_of: String,
    pub region: String,
    pub lambda: LambdaPrices,
    pub api_gateway_http: ApiGatewayPrices,
    pub dynamodb_on_demand: DynamoDbPrices,
    pub eventbridge: EventBridgePrices,
    pub cloudwatch: CloudWatchPrices,
    pub secrets_manager: SecretsManagerPrices,
    pub sqs_standard: SqsPrices,
    pub peers: Peers,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LambdaPrices {
    pub as_of: String,
    pub sources: Vec<String>,
    pub per_million_requests: f64,
    pub gb_second: PerArch,
    pub free_requests_per_month: f64,
    pub free_gb_seconds_per_month: f64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiGatewayPrices {
    pub as_of: String,
    pub sources: Vec<String>,
    pub tiers: Vec<Tier>,
}

/// Requests up to `up_to_millions` a month (cumulative) cost `per_million`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    pub up_to_millions: f64,
    pub per_million: f64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamoDbPrices {
    pub as_of: String,
    pub sources: Vec<String>,
    pub per_million_wru: f64,
    pub per_million_rru: f64,
    pub storage_gb_month: f64,
    pub free_storage_gb: f64,
    pub pitr_gb_month: f64,
    pub streams_per_100k_read_units: f64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBridgePrices {
    pub as_of: String,
    pub sources: Vec<String>,
    pub per_million_custom_events: f64,
    pub per_million_api_destination_invocations: f64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudWatchPrices {
    pub as_of: String,
    pub sources: Vec<String>,
    pub logs_ingest_gb: f64,
    pub logs_store_gb_month: f64,
    pub free_logs_gb: f64,
    pub alarm_metric_month: f64,
    pub free_alarm_metrics: f64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsManagerPrices {
    pub as_of: String,
    pub sources: Vec<String>,
    pub secret_month: f64,
    pub per_10k_calls: f64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqsPrices {
    pub as_of: String,
    pub sources: Vec<String>,
    pub per_million_requests: f64,
    pub free_requests_per_month: f64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peers {
    pub revenuecat: RevenueCat,
    pub stripe_billing: StripeBilling,
    pub polar: Polar,
    pub autumn: Autumn,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevenueCat {
    pub as_of: String,
    pub source: String,
    pub free_mtr_usd: f64,
    pub percent_of_mtr: f64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeBilling {
    pub as_of: String,
    pub source: String,
    pub percent_of_volume: f64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Polar {
    pub as_of: String,
    pub source: String,
    pub percent: f64,
    pub fixed_usd: f64,
    pub note: String,
}

/// No published figure was captured: a note, and never a number.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Autumn {
    pub as_of: String,
    pub source: String,
    pub note: String,
}

/// The prices for `region`: prices.toml's base with its `[regions.<region>]` table laid
/// over it, field by field. The second value says whether the file knows the region at
/// all (an unknown region is priced as the base).
pub fn prices_for_region(text: &str, region: &str) -> Result<(Prices, bool), String> {
    let mut base: toml::Table = toml::from_str(text).map_err(|e| format!("prices.toml: {e}"))?;
    let regions = match base.remove("regions") {
        None => toml::Table::new(),
        Some(toml::Value::Table(regions)) => regions,
        Some(_) => return Err("prices.toml: [regions] must be a table".into()),
    };
    let known = region
        == base
            .get("region")
            .and_then(toml::Value::as_str)
            .unwrap_or("");
    let overrides = regions.get(region).cloned();
    if let Some(overrides) = &overrides {
        let toml::Value::Table(overrides) = overrides else {
            return Err(format!("prices.toml: [regions.{region}] must be a table"));
        };
        merge(&mut base, overrides);
        base.insert("region".into(), toml::Value::String(region.to_owned()));
    }
    let prices: Prices = toml::Value::Table(base)
        .try_into()
        .map_err(|e| format!("prices.toml: {e}"))?;
    Ok((prices, known || overrides.is_some()))
}

/// `over`'s values replace `base`'s, tables merged key by key.
fn merge(base: &mut toml::Table, over: &toml::Table) {
    for (key, value) in over {
        match (base.get_mut(key), value) {
            (Some(toml::Value::Table(inner)), toml::Value::Table(over_inner)) => {
                merge(inner, over_inner)
            }
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// measured.toml (the bench's figures)

#[derive(Clone, Debug, Deserialize)]
pub struct Measured {
    pub measured_on: String,
    pub machine: String,
    pub memory_mb: f64,
    pub routes: BTreeMap<String, RouteFigures>,
}

/// What one request (or one scheduled run, or one stream batch) of a route spends.
#[derive(Clone, Debug, Deserialize)]
pub struct RouteFigures {
    pub function: String,
    pub via_api_gateway: bool,
    pub dynamodb_calls: BTreeMap<String, f64>,
    pub read_units: f64,
    pub write_units: f64,
    pub units_from: String,
    pub other_aws_calls: BTreeMap<String, f64>,
    pub dodo_calls: f64,
    pub billed_ms: PerArch,
    pub log_bytes_per_1000: f64,
}

pub fn parse_measured(text: &str) -> Result<Measured, String> {
    toml::from_str(text).map_err(|e| format!("measured.toml: {e}"))
}

impl Measured {
    pub fn route(&self, name: &str) -> Result<&RouteFigures, String> {
        self.routes
            .get(name)
            .ok_or_else(|| format!("measured.toml has no [routes.{name}]: run `cargo run -p dev --bin lambda-bench -- --costs-only --write-measured dev/cost/measured.toml`"))
    }
}

// ---------------------------------------------------------------------------------------
// template.yaml

/// What the deployed stack holds that costs money by itself, read from template.yaml.
#[derive(Clone, Debug, PartialEq)]
pub struct TemplateFacts {
    pub access_log_format: String,
    /// Alarm metrics billed (a metric-math alarm counts each metric it reads), without
    /// and with the access-events webhook (its alarm is conditional).
    pub alarm_metrics: f64,
    pub alarm_metrics_webhook_only: f64,
    /// Secrets the founder keeps in Secrets Manager (the `*SecretName` parameters) and
    /// those the stack creates for the webhook.
    pub founder_secrets: f64,
    pub webhook_secrets: f64,
    /// Per function binary, the secrets it reads at cold start in secrets-manager mode
    /// (its `*_SECRET_ID` variables).
    pub secret_readers: BTreeMap<String, f64>,
    pub point_in_time_recovery: bool,
    pub log_retention_days: f64,
    pub memory_mb: f64,
    /// Requests per second API Gateway lets through: the stage default and per route key.
    pub default_rate_limit: f64,
    pub route_rate_limits: BTreeMap<String, f64>,
}

pub fn template_facts(text: &str) -> Result<TemplateFacts, String> {
    let yaml: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| format!("template.yaml: {e}"))?;
    let template =
        serde_json::to_value(crate::iam::untag(yaml)).map_err(|e| format!("template.yaml: {e}"))?;
    let resources = template["Resources"]
        .as_object()
        .ok_or("template.yaml: no Resources")?;
    let of_type = |kind: &'static str| {
        resources
            .values()
            .filter(move |resource| resource["Type"] == kind)
    };
    let webhook_only =
        |resource: &serde_json::Value| resource["Condition"] == "HasAccessEventsWebhook";

    let api = of_type("AWS::Serverless::HttpApi")
        .next()
        .ok_or("template.yaml: no AWS::Serverless::HttpApi")?;
    let access_log_format = api["Properties"]["AccessLogSettings"]["Format"]
        .as_str()
        .ok_or("template.yaml: the HttpApi has no AccessLogSettings.Format")?
        .to_owned();
    let default_rate_limit = api["Properties"]["DefaultRouteSettings"]["ThrottlingRateLimit"]
        .as_f64()
        .unwrap_or(f64::INFINITY);
    let route_rate_limits = api["Properties"]["RouteSettings"]
        .as_object()
        .map(|routes| {
            routes
                .iter()
                .filter_map(|(key, settings)| {
                    Some((key.clone(), settings["ThrottlingRateLimit"].as_f64()?))
                })
                .collect()
        })
        .unwrap_or_default();

    let (mut alarm_metrics, mut alarm_metrics_webhook_only) = (0.0, 0.0);
    for alarm in of_type("AWS::CloudWatch::Alarm") {
        let metrics = match alarm["Properties"]["Metrics"].as_array() {
            None => 1.0,
            Some(metrics) => metrics
                .iter()
                .filter(|metric| metric.get("MetricStat").is_some())
                .count() as f64,
        };
        if webhook_only(alarm) {
            alarm_metrics_webhook_only += metrics;
        } else {
            alarm_metrics += metrics;
        }
    }

    let founder_secrets = template["Parameters"]
        .as_object()
        .map(|parameters| {
            parameters
                .keys()
                .filter(|name| name.ends_with("SecretName"))
                .count() as f64
        })
        .unwrap_or(0.0);
    let webhook_secrets = of_type("AWS::SecretsManager::Secret")
        .filter(|secret| webhook_only(secret))
        .count() as f64;
    let secret_readers = of_type("AWS::Serverless::Function")
        .filter_map(|function| {
            let binary = function["Metadata"]["BuildProperties"]["Binary"].as_str()?;
            let reads = function["Properties"]["Environment"]["Variables"]
                .as_object()?
                .keys()
                .filter(|name| name.ends_with("_SECRET_ID"))
                .count() as f64;
            (reads > 0.0).then(|| (binary.to_owned(), reads))
        })
        .collect();

    let point_in_time_recovery = of_type("AWS::DynamoDB::Table").any(|table| {
        table["Properties"]["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"]
            == true
    });
    let log_retention_days = of_type("AWS::Logs::LogGroup")
        .filter_map(|group| group["Properties"]["RetentionInDays"].as_f64())
        .fold(0.0, f64::max);
    let memory_mb = template["Globals"]["Function"]["MemorySize"]
        .as_f64()
        .ok_or("template.yaml: no Globals.Function.MemorySize")?;
    Ok(TemplateFacts {
        access_log_format,
        alarm_metrics,
        alarm_metrics_webhook_only,
        founder_secrets,
        webhook_secrets,
        secret_readers,
        point_in_time_recovery,
        log_retention_days,
        memory_mb,
        default_rate_limit,
        route_rate_limits,
    })
}

/// The API Gateway route key a measured route is served on (None: not behind API Gateway).
pub fn route_key(route: &str) -> Option<&'static str> {
    Some(match route {
        "status" => "GET /payment/status",
        "entitlements" => "GET /payment/entitlements",
        "plans" => "GET /payment/plans",
        "usage" | "usage_replay" => "POST /server/usage",
        "create_checkout" => "POST /payment/create-checkout-session",
        "success" => "POST /payment/success",
        "portal" => "POST /payment/portal",
        _ => return None,
    })
}

/// One access-log line as API Gateway writes it for `route`: the template's Format with
/// typical values (`-` where a variable is empty, as API Gateway writes it). The /server
/// routes are IAM-signed, so they carry the caller's role ARN; the others a JWT (no ARN).
pub fn access_log_line(format: &str, route: &str) -> String {
    let key = route_key(route).unwrap_or("POST /payment/unknown");
    let signed = key.contains(" /server/");
    let value = |variable: &str| -> String {
        match variable {
            "requestId" => "Jb3kQhGvIAMEVzA=".into(),
            "identity.sourceIp" => "203.0.113.195".into(),
            "requestTime" => "06/Dec/2026:09:30:00 +0000".into(),
            "httpMethod" => key.split(' ').next().unwrap_or("GET").into(),
            "routeKey" => key.into(),
            "status" => "200".into(),
            "responseLength" => "312".into(),
            "responseLatency" => "18".into(),
            "identity.userArn" if signed => {
                "arn:aws:sts::123456789012:assumed-role/backend-role/backend-session".into()
            }
            "identity.caller" if signed => "AROA3XFRBF535PLBIFPI4:backend-session".into(),
            _ => "-".into(),
        }
    };
    let mut line = String::with_capacity(format.len() * 2);
    let mut rest = format;
    while let Some(at) = rest.find("$context.") {
        line.push_str(&rest[..at]);
        let after = &rest[at + "$context.".len()..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_'))
            .unwrap_or(after.len());
        line.push_str(&value(&after[..end]));
        rest = &after[end..];
    }
    line.push_str(rest);
    line
}

// ---------------------------------------------------------------------------------------
// The traffic, and the bill

/// What the founder states about their users.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub mau: f64,
    pub checks_per_user_day: f64,
    pub usage_per_user_day: f64,
    pub payments_per_month: f64,
    pub arch: Arch,
    pub secrets_manager: bool,
    pub access_events_webhook: bool,
    pub free_tier: bool,
    pub bytes_per_user: f64,
    pub revenue_per_payment: f64,
}

/// Invocations a month per measured route.
pub fn monthly_invocations(scenario: &Scenario) -> BTreeMap<&'static str, f64> {
    let mut volume = BTreeMap::new();
    volume.insert(
        "entitlements",
        scenario.mau * scenario.checks_per_user_day * DAYS_PER_MONTH,
    );
    volume.insert(
        "usage",
        scenario.mau * scenario.usage_per_user_day * DAYS_PER_MONTH,
    );
    for route in ROUTES_PER_PAYMENT {
        *volume.entry(route).or_insert(0.0) += scenario.payments_per_month;
    }
    volume.insert(
        "access_events_batch",
        scenario.payments_per_month * STATE_CHANGES_PER_PAYMENT * BATCHES_PER_STATE_CHANGE,
    );
    volume.insert("reconcile_run", RECONCILE_RUNS_PER_MONTH);
    volume
}

#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub service: &'static str,
    pub quantity: String,
    pub usd: f64,
}

#[derive(Clone, Debug)]
pub struct Bill {
    pub lines: Vec<Line>,
    pub total: f64,
    /// HTTP requests served: API Gateway's plus the webhook's function URL.
    pub http_requests: f64,
    pub mau: f64,
    /// Things the founder should know about this volume (limits it would hit).
    pub warnings: Vec<String>,
}

impl Bill {
    pub fn per_mau(&self) -> f64 {
        if self.mau > 0.0 {
            self.total / self.mau
        } else {
            0.0
        }
    }
    pub fn per_1000_requests(&self) -> f64 {
        if self.http_requests > 0.0 {
            self.total / (self.http_requests / 1000.0)
        } else {
            0.0
        }
    }
    pub fn service(&self, service: &str) -> f64 {
        self.lines
            .iter()
            .filter(|line| line.service == service)
            .map(|line| line.usd)
            .sum()
    }
}

fn tiered(requests: f64, tiers: &[Tier]) -> f64 {
    let mut usd = 0.0;
    let mut below = 0.0;
    for tier in tiers {
        let ceiling = tier.up_to_millions * 1e6;
        let here = (requests.min(ceiling) - below).max(0.0);
        usd += here / 1e6 * tier.per_million;
        below = ceiling;
        if requests <= ceiling {
            break;
        }
    }
    usd
}

fn after_free(quantity: f64, free: f64, free_tier: bool) -> f64 {
    if free_tier {
        (quantity - free).max(0.0)
    } else {
        quantity
    }
}

/// The month's bill for `scenario`.
pub fn bill(
    scenario: &Scenario,
    prices: &Prices,
    measured: &Measured,
    template: &TemplateFacts,
) -> Result<Bill, String> {
    let volume = monthly_invocations(scenario);
    let gb_memory = measured.memory_mb / 1024.0;
    let (mut invocations, mut gb_seconds, mut api_requests, mut http_requests) =
        (0.0, 0.0, 0.0, 0.0);
    let (mut rru, mut wru, mut function_log_bytes, mut access_log_bytes) = (0.0, 0.0, 0.0, 0.0);
    let mut by_function: BTreeMap<&str, f64> = BTreeMap::new();
    for (route, count) in &volume {
        let figures = measured.route(route)?;
        invocations += count;
        gb_seconds += count * figures.billed_ms.of(scenario.arch) / 1000.0 * gb_memory;
        rru += count * figures.read_units;
        wru += count * figures.write_units;
        function_log_bytes += count * figures.log_bytes_per_1000 / 1000.0;
        *by_function.entry(figures.function.as_str()).or_insert(0.0) += count;
        if figures.via_api_gateway {
            api_requests += count;
            http_requests += count;
            access_log_bytes +=
                count * access_log_line(&template.access_log_format, route).len() as f64;
        } else if figures.function == "webhook" {
            http_requests += count;
        }
    }

    let mut lines = Vec::new();
    let mut line = |service: &'static str, quantity: String, usd: f64| {
        lines.push(Line {
            service,
            quantity,
            usd,
        })
    };

    let lambda = &prices.lambda;
    let billed_requests = after_free(
        invocations,
        lambda.free_requests_per_month,
        scenario.free_tier,
    );
    line(
        "Lambda requests",
        format!("{} invocations", count(invocations)),
        billed_requests / 1e6 * lambda.per_million_requests,
    );
    let billed_gb_seconds = after_free(
        gb_seconds,
        lambda.free_gb_seconds_per_month,
        scenario.free_tier,
    );
    line(
        "Lambda duration",
        format!(
            "{} GB-s ({} MB, {})",
            count(gb_seconds),
            measured.memory_mb,
            scenario.arch.name()
        ),
        billed_gb_seconds * lambda.gb_second.of(scenario.arch),
    );

    line(
        "API Gateway HTTP API",
        format!("{} requests", count(api_requests)),
        tiered(api_requests, &prices.api_gateway_http.tiers),
    );

    let dynamodb = &prices.dynamodb_on_demand;
    line(
        "DynamoDB reads",
        format!("{} RRU", count(rru)),
        rru / 1e6 * dynamodb.per_million_rru,
    );
    line(
        "DynamoDB writes",
        format!("{} WRU", count(wru)),
        wru / 1e6 * dynamodb.per_million_wru,
    );
    let table_gb = scenario.mau * scenario.bytes_per_user / GB;
    line(
        "DynamoDB storage",
        format!("{:.2} GB", table_gb),
        after_free(table_gb, dynamodb.free_storage_gb, scenario.free_tier)
            * dynamodb.storage_gb_month,
    );
    if template.point_in_time_recovery {
        line(
            "DynamoDB PITR backups",
            format!("{:.2} GB", table_gb),
            table_gb * dynamodb.pitr_gb_month,
        );
    }

    let eventbridge = &prices.eventbridge;
    let events = scenario.payments_per_month * STATE_CHANGES_PER_PAYMENT;
    line(
        "EventBridge events",
        format!("{} access events", count(events)),
        events / 1e6 * eventbridge.per_million_custom_events,
    );
    if scenario.access_events_webhook {
        line(
            "EventBridge API destination",
            format!("{} deliveries", count(events)),
            events / 1e6 * eventbridge.per_million_api_destination_invocations,
        );
    }

    let cloudwatch = &prices.cloudwatch;
    let log_gb = (function_log_bytes + access_log_bytes) / GB;
    line(
        "CloudWatch Logs ingestion",
        format!(
            "{:.2} GB ({:.2} function + {:.2} API access)",
            log_gb,
            function_log_bytes / GB,
            access_log_bytes / GB
        ),
        after_free(log_gb, cloudwatch.free_logs_gb, scenario.free_tier) * cloudwatch.logs_ingest_gb,
    );
    let stored_gb = log_gb * template.log_retention_days / DAYS_PER_MONTH;
    line(
        "CloudWatch Logs storage",
        format!(
            "{:.2} GB ({} days kept)",
            stored_gb, template.log_retention_days
        ),
        stored_gb * cloudwatch.logs_store_gb_month,
    );
    let alarm_metrics = template.alarm_metrics
        + if scenario.access_events_webhook {
            template.alarm_metrics_webhook_only
        } else {
            0.0
        };
    line(
        "CloudWatch alarms",
        format!("{alarm_metrics} alarm metrics"),
        after_free(
            alarm_metrics,
            cloudwatch.free_alarm_metrics,
            scenario.free_tier,
        ) * cloudwatch.alarm_metric_month,
    );

    let secrets = template.founder_secrets
        + if scenario.access_events_webhook {
            template.webhook_secrets
        } else {
            0.0
        };
    let secret_calls: f64 = if scenario.secrets_manager {
        template
            .secret_readers
            .iter()
            .map(|(function, reads)| {
                let invoked = by_function.get(function.as_str()).copied().unwrap_or(0.0);
                invoked.min(MAX_COLD_STARTS_PER_FUNCTION) * reads
            })
            .sum()
    } else {
        0.0
    };
    let secrets_manager = &prices.secrets_manager;
    line(
        "Secrets Manager",
        format!("{secrets} secrets, {} GetSecretValue", count(secret_calls)),
        secrets * secrets_manager.secret_month + secret_calls / 1e4 * secrets_manager.per_10k_calls,
    );
    line("SQS dead-letter queues", "empty: no requests".into(), 0.0);

    let total = lines.iter().map(|line| line.usd).sum();
    let mut warnings = Vec::new();
    for (route, limit_key) in [
        ("entitlements", "GET /payment/entitlements"),
        ("usage", "POST /server/usage"),
    ] {
        let limit = template
            .route_rate_limits
            .get(limit_key)
            .copied()
            .unwrap_or(template.default_rate_limit);
        let average = volume.get(route).copied().unwrap_or(0.0) / SECONDS_PER_MONTH;
        if average > limit {
            warnings.push(format!(
                "{limit_key}: {average:.0} requests/s on average, above template.yaml's ThrottlingRateLimit of {limit}/s: raise it (and ApiReservedConcurrency) for this volume; peaks are higher than the average"
            ));
        }
    }
    Ok(Bill {
        lines,
        total,
        http_requests,
        mau: scenario.mau,
        warnings,
    })
}

/// What the same volume would cost on the peers' published pricing, from the founder's
/// revenue (payments × revenue per payment). None: no published figure.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerFees {
    pub revenue: f64,
    pub revenuecat: f64,
    pub stripe_billing: f64,
    pub polar: f64,
    pub autumn: Option<f64>,
}

pub fn peer_fees(scenario: &Scenario, peers: &Peers) -> PeerFees {
    let revenue = scenario.payments_per_month * scenario.revenue_per_payment;
    let revenuecat = if revenue > peers.revenuecat.free_mtr_usd {
        revenue * peers.revenuecat.percent_of_mtr / 100.0
    } else {
        0.0
    };
    PeerFees {
        revenue,
        revenuecat,
        stripe_billing: revenue * peers.stripe_billing.percent_of_volume / 100.0,
        polar: revenue * peers.polar.percent / 100.0
            + scenario.payments_per_month * peers.polar.fixed_usd,
        autumn: None,
    }
}

// ---------------------------------------------------------------------------------------
// The command

#[derive(Clone, Debug)]
pub struct Options {
    pub scenario: Scenario,
    /// Payments as a share of MAU, when given that way (the table scales payments with MAU).
    pub paying_share: f64,
    pub region: String,
    pub prices: PathBuf,
    pub measured: PathBuf,
    pub table: bool,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut mau = None;
        let mut checks = None;
        let mut usage = None;
        let mut purchases: Option<f64> = None;
        let mut share: Option<f64> = None;
        let mut options = Options {
            scenario: Scenario {
                mau: 0.0,
                checks_per_user_day: 0.0,
                usage_per_user_day: 0.0,
                payments_per_month: 0.0,
                arch: Arch::Arm64,
                secrets_manager: false,
                access_events_webhook: false,
                free_tier: false,
                bytes_per_user: 2048.0,
                revenue_per_payment: 10.0,
            },
            paying_share: 0.05,
            region: "us-east-1".into(),
            prices: prices_path(),
            measured: measured_path(),
            table: false,
        };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let mut value = || {
                args.next()
                    .map(String::as_str)
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            let number = |text: &str| -> Result<f64, String> {
                text.parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite() && *n >= 0.0)
                    .ok_or_else(|| format!("{flag}: {text} is not a number ≥ 0"))
            };
            match flag.as_str() {
                "--mau" => mau = Some(number(value()?)?),
                "--checks-per-user-day" => checks = Some(number(value()?)?),
                "--usage-per-user-day" => usage = Some(number(value()?)?),
                "--purchases-per-month" => purchases = Some(number(value()?)?),
                "--paying-share" => {
                    let x = number(value()?)?;
                    if x > 1.0 {
                        return Err(format!("--paying-share: {x} is a share of MAU, 0 to 1"));
                    }
                    share = Some(x);
                }
                "--region" => options.region = value()?.to_owned(),
                "--arch" => {
                    options.scenario.arch = match value()? {
                        "arm64" => Arch::Arm64,
                        "x86_64" => Arch::X86_64,
                        other => return Err(format!("--arch: {other} is not arm64 or x86_64")),
                    }
                }
                "--secrets-manager" => options.scenario.secrets_manager = true,
                "--access-events-webhook" => options.scenario.access_events_webhook = true,
                "--free-tier" => options.scenario.free_tier = true,
                "--bytes-per-user" => options.scenario.bytes_per_user = number(value()?)?,
                "--revenue-per-payment" => options.scenario.revenue_per_payment = number(value()?)?,
                "--prices" => options.prices = PathBuf::from(value()?),
                "--measured" => options.measured = PathBuf::from(value()?),
                "--table" => options.table = true,
                other => return Err(format!("unknown option {other}")),
            }
        }
        if purchases.is_some() && share.is_some() {
            return Err("give --purchases-per-month or --paying-share, not both".into());
        }
        let mau = mau.ok_or("--mau is required")?;
        options.scenario.mau = mau;
        options.scenario.checks_per_user_day = checks.ok_or("--checks-per-user-day is required")?;
        options.scenario.usage_per_user_day = usage.ok_or("--usage-per-user-day is required")?;
        if let Some(share) = share {
            options.paying_share = share;
        }
        match purchases {
            Some(purchases) => {
                options.scenario.payments_per_month = purchases;
                options.paying_share = if mau > 0.0 { purchases / mau } else { 0.0 };
            }
            None => options.scenario.payments_per_month = mau * options.paying_share,
        }
        Ok(options)
    }
}

/// Reads the three files and renders the report (the bill, or the table with `--table`).
pub fn run(args: &[String]) -> Result<String, String> {
    let options = Options::parse(args).map_err(|e| format!("{e}\n\n{USAGE}"))?;
    let read = |path: &PathBuf| {
        std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
    };
    let (prices, region_known) = prices_for_region(&read(&options.prices)?, &options.region)?;
    let measured = parse_measured(&read(&options.measured)?)?;
    let template = template_facts(&read(&crate::local_dynamodb::template_path())?)?;
    let inputs = Inputs {
        prices: &prices,
        region_known,
        measured: &measured,
        template: &template,
    };
    if options.table {
        table(&options, &inputs)
    } else {
        report(&options, &inputs)
    }
}

pub struct Inputs<'a> {
    pub prices: &'a Prices,
    pub region_known: bool,
    pub measured: &'a Measured,
    pub template: &'a TemplateFacts,
}

/// A path as the founder typed it, or relative to the workspace for the defaults.
fn shown(path: &std::path::Path) -> String {
    let dev = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = dev.parent().unwrap_or(dev);
    path.strip_prefix(workspace)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// `1234567` as `1,234,567` (rounded), for quantities.
pub fn count(n: f64) -> String {
    let digits = format!("{:.0}", n.round());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Dollars with cents, thousands separated.
pub fn usd(n: f64) -> String {
    let cents = (n * 100.0).round();
    format!(
        "${}.{:02}",
        count((cents / 100.0).trunc()),
        (cents % 100.0) as u64
    )
}

pub fn report(options: &Options, inputs: &Inputs) -> Result<String, String> {
    let scenario = &options.scenario;
    let bill = bill(scenario, inputs.prices, inputs.measured, inputs.template)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Monthly AWS cost at {} MAU, {}, {}\nprices {} (as of {}); figures {} ({}, {})",
        count(scenario.mau),
        inputs.prices.region,
        scenario.arch.name(),
        shown(&options.prices),
        inputs.prices.as_of,
        shown(&options.measured),
        inputs.measured.measured_on,
        inputs.measured.machine,
    );
    let _ = writeln!(out);
    let width = bill
        .lines
        .iter()
        .map(|line| line.quantity.len())
        .max()
        .unwrap_or(0);
    for line in &bill.lines {
        let _ = writeln!(
            out,
            "  {:<28} {:<width$}  {:>12}",
            line.service,
            line.quantity,
            usd(line.usd)
        );
    }
    let _ = writeln!(
        out,
        "  {:<28} {:<width$}  {:>12}",
        "Total",
        "",
        usd(bill.total)
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "  per MAU ${:.5}   per 1,000 requests ${:.5}   ({} HTTP requests)",
        bill.per_mau(),
        bill.per_1000_requests(),
        count(bill.http_requests)
    );
    let _ = writeln!(out);
    out.push_str(&assumptions(options, inputs));
    for warning in &bill.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    Ok(out)
}

/// The traffic model and what the bill leaves out, printed under every result.
pub fn assumptions(options: &Options, inputs: &Inputs) -> String {
    let scenario = &options.scenario;
    let mut out = String::from("Assumptions:\n");
    let mut say = |text: String| {
        let _ = writeln!(out, "- {text}");
    };
    say(format!(
        "a month is 30 days; each MAU reads entitlements {} times and the founder's backend reports usage {} times a day (new idempotency keys, no replays)",
        scenario.checks_per_user_day, scenario.usage_per_user_day
    ));
    say(format!(
        "{} payments a month ({:.1} % of MAU), each a new subscription's: checkout + success + webhooks payment.succeeded and subscription.active, one access event (one stream batch, one EventBridge event)",
        count(scenario.payments_per_month),
        options.paying_share * 100.0
    ));
    say("reconcile runs hourly (720 runs) with nothing due; portal, plans, trials and plan changes are not counted".into());
    say(format!(
        "Lambda at {} MB (measured.toml; template.yaml deploys {} MB), billed duration = the measured per-invocation figure; cold starts' INIT time (~2 ms) not counted",
        inputs.measured.memory_mb, inputs.template.memory_mb
    ));
    say(format!(
        "API Gateway access log: one line per request, template.yaml's format rendered with typical values ({} bytes on GET /payment/entitlements, {} on POST /server/usage); CloudWatch's 26-byte per-event overhead and compression of stored logs not counted",
        access_log_line(&inputs.template.access_log_format, "entitlements").len(),
        access_log_line(&inputs.template.access_log_format, "usage").len()
    ));
    say(format!(
        "DynamoDB stores {} bytes per MAU (--bytes-per-user); PITR billed on the same size",
        scenario.bytes_per_user
    ));
    say(format!(
        "Secrets Manager: the {} founder secrets exist in both SecretsSource modes (CloudFormation resolves them at deploy time){}; with --secrets-manager each secret-reading function makes one GetSecretValue per cold start, at most one cold start per function per 10 minutes",
        inputs.template.founder_secrets,
        if scenario.access_events_webhook {
            ", plus the webhook's own secret (the connection's secret is included in the API destination price)"
        } else {
            ""
        }
    ));
    say(if scenario.free_tier {
        "free tier: AWS's always-free allowances subtracted (Lambda 1M requests + 400,000 GB-s, 25 GB DynamoDB, 5 GB logs, 10 alarm metrics); API Gateway's 12-month offer is not".into()
    } else {
        "no free tier subtracted (--free-tier subtracts the always-free allowances)".into()
    });
    if !inputs.region_known {
        say(format!(
            "prices.toml has no [regions.{}]: priced as {} (other regions are often 10–25 % dearer)",
            options.region, inputs.prices.region
        ));
    }
    say("not counted: data transfer out (first 100 GB a month free), the Cognito user pool the stack creates when JwtIssuer is empty (billed per MAU beyond its free tier), a customer managed KMS key ($1/month), Dodo's own fees".into());
    out
}

/// The table the book shows: the bill at 1k, 10k, 100k and 1M MAU beside the peers' fees
/// for the same payments.
pub fn table(options: &Options, inputs: &Inputs) -> Result<String, String> {
    let peers = &inputs.prices.peers;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Monthly AWS cost, {}, {}, {} % of MAU paying once a month; prices {} (as of {}); figures {} ({}, {})\n",
        inputs.prices.region,
        options.scenario.arch.name(),
        options.paying_share * 100.0,
        shown(&options.prices),
        inputs.prices.as_of,
        shown(&options.measured),
        inputs.measured.measured_on,
        inputs.measured.machine,
    );
    let _ = writeln!(
        out,
        "| MAU | requests/month | AWS total | per MAU | Lambda | API Gateway | DynamoDB | CloudWatch | other | revenue | RevenueCat | Stripe Billing | Polar | Autumn |"
    );
    let _ = writeln!(
        out,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    let mut warnings = Vec::new();
    for mau in [1_000.0, 10_000.0, 100_000.0, 1_000_000.0] {
        let scenario = Scenario {
            mau,
            payments_per_month: mau * options.paying_share,
            ..options.scenario.clone()
        };
        let bill = bill(&scenario, inputs.prices, inputs.measured, inputs.template)?;
        let fees = peer_fees(&scenario, peers);
        let lambda = bill.service("Lambda requests") + bill.service("Lambda duration");
        let api = bill.service("API Gateway HTTP API");
        let dynamodb: f64 = bill
            .lines
            .iter()
            .filter(|line| line.service.starts_with("DynamoDB"))
            .map(|line| line.usd)
            .sum();
        let cloudwatch: f64 = bill
            .lines
            .iter()
            .filter(|line| line.service.starts_with("CloudWatch"))
            .map(|line| line.usd)
            .sum();
        let other = bill.total - lambda - api - dynamodb - cloudwatch;
        let _ = writeln!(
            out,
            "| {} | {} | **{}** | ${:.4} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            count(mau),
            count(bill.http_requests),
            usd(bill.total),
            bill.per_mau(),
            usd(lambda),
            usd(api),
            usd(dynamodb),
            usd(cloudwatch),
            usd(other),
            usd(fees.revenue),
            usd(fees.revenuecat),
            usd(fees.stripe_billing),
            usd(fees.polar),
            fees.autumn
                .map(usd)
                .unwrap_or_else(|| "not published".into()),
        );
        warnings.extend(
            bill.warnings
                .into_iter()
                .map(|w| format!("at {} MAU, {w}", count(mau))),
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Peers: revenue = payments × ${} (--revenue-per-payment). RevenueCat {} % of monthly tracked revenue above ${} ({}, {}); Stripe Billing {} % of billing volume ({}, {}); Polar {} % + ${:.2} per payment, card processing and merchant of record included ({}, {}; {}); Autumn: {} ({}). Card processing and Dodo's fee are left out on every side.",
        options.scenario.revenue_per_payment,
        peers.revenuecat.percent_of_mtr,
        count(peers.revenuecat.free_mtr_usd),
        peers.revenuecat.source,
        peers.revenuecat.as_of,
        peers.stripe_billing.percent_of_volume,
        peers.stripe_billing.source,
        peers.stripe_billing.as_of,
        peers.polar.percent,
        peers.polar.fixed_usd,
        peers.polar.source,
        peers.polar.as_of,
        peers.polar.note,
        peers.autumn.note,
        peers.autumn.source,
    );
    let _ = writeln!(out);
    out.push_str(&assumptions(options, inputs));
    for warning in warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// One route, round prices: every dollar below is computed by hand.
    const PRICES: &str = r#"
as_of = "2026-01-01"
region = "us-east-1"
[lambda]
as_of = "2026-01-01"
sources = ["test"]
per_million_requests = 0.20
gb_second = { x86_64 = 0.00002, arm64 = 0.00001 }
free_requests_per_month = 1_000_000
free_gb_seconds_per_month = 400_000
[api_gateway_http]
as_of = "2026-01-01"
sources = ["test"]
tiers = [{ up_to_millions = 1.0, per_million = 1.00 }, { up_to_millions = inf, per_million = 0.50 }]
[dynamodb_on_demand]
as_of = "2026-01-01"
sources = ["test"]
per_million_wru = 1.0
per_million_rru = 0.5
storage_gb_month = 0.25
free_storage_gb = 25
pitr_gb_month = 0.20
streams_per_100k_read_units = 0.02
[eventbridge]
as_of = "2026-01-01"
sources = ["test"]
per_million_custom_events = 1.00
per_million_api_destination_invocations = 0.20
[cloudwatch]
as_of = "2026-01-01"
sources = ["test"]
logs_ingest_gb = 0.50
logs_store_gb_month = 0.03
free_logs_gb = 5
alarm_metric_month = 0.10
free_alarm_metrics = 10
[secrets_manager]
as_of = "2026-01-01"
sources = ["test"]
secret_month = 0.40
per_10k_calls = 0.05
[sqs_standard]
as_of = "2026-01-01"
sources = ["test"]
per_million_requests = 0.40
free_requests_per_month = 1_000_000
[regions.far-away-1.lambda]
gb_second = { x86_64 = 0.00004, arm64 = 0.00003 }
[peers.revenuecat]
as_of = "2024-03-12"
source = "test"
free_mtr_usd = 2500.0
percent_of_mtr = 1.0
[peers.stripe_billing]
as_of = "2024-07-10"
source = "test"
percent_of_volume = 0.7
[peers.polar]
as_of = "2026-01-01"
source = "test"
percent = 4.0
fixed_usd = 0.40
note = "test"
[peers.autumn]
as_of = "2026-01-01"
source = "test"
note = "not published"
"#;

    fn route(function: &str, api: bool, rru: f64, wru: f64, ms: f64, log: f64) -> RouteFigures {
        RouteFigures {
            function: function.into(),
            via_api_gateway: api,
            dynamodb_calls: BTreeMap::new(),
            read_units: rru,
            write_units: wru,
            units_from: "rules".into(),
            other_aws_calls: BTreeMap::new(),
            dodo_calls: 0.0,
            billed_ms: PerArch {
                arm64: ms,
                x86_64: ms * 2.0,
            },
            log_bytes_per_1000: log,
        }
    }

    /// Only the entitlement read costs anything: every other route is free and silent.
    fn one_route_measured() -> Measured {
        let mut routes = BTreeMap::new();
        routes.insert(
            "entitlements".into(),
            route("status", true, 1.0, 0.0, 2.0, 0.0),
        );
        for name in [
            "usage",
            "create_checkout",
            "success",
            "webhook_payment_succeeded",
            "webhook_subscription_active",
            "access_events_batch",
            "reconcile_run",
        ] {
            routes.insert(name.into(), route("other", false, 0.0, 0.0, 0.0, 0.0));
        }
        Measured {
            measured_on: "2026-01-01".into(),
            machine: "test".into(),
            memory_mb: 128.0,
            routes,
        }
    }

    fn facts() -> TemplateFacts {
        TemplateFacts {
            access_log_format: r#"{"id":"$context.requestId"}"#.into(),
            alarm_metrics: 0.0,
            alarm_metrics_webhook_only: 0.0,
            founder_secrets: 0.0,
            webhook_secrets: 0.0,
            secret_readers: BTreeMap::new(),
            point_in_time_recovery: false,
            log_retention_days: 30.0,
            memory_mb: 128.0,
            default_rate_limit: f64::INFINITY,
            route_rate_limits: BTreeMap::new(),
        }
    }

    fn scenario() -> Scenario {
        Scenario {
            mau: 1000.0,
            checks_per_user_day: 100.0,
            usage_per_user_day: 0.0,
            payments_per_month: 0.0,
            arch: Arch::Arm64,
            secrets_manager: false,
            access_events_webhook: false,
            free_tier: false,
            bytes_per_user: 0.0,
            revenue_per_payment: 10.0,
        }
    }

    #[test]
    fn one_route_at_known_prices_costs_the_hand_computed_dollars() {
        let (prices, _) = prices_for_region(PRICES, "us-east-1").unwrap();
        let bill = bill(&scenario(), &prices, &one_route_measured(), &facts()).unwrap();
        // 1,000 MAU × 100 reads × 30 days = 3,000,000 reads, + 720 reconcile runs.
        // Lambda requests: 3,000,720 / 1e6 × $0.20 = $0.600144.
        assert!((bill.service("Lambda requests") - 0.600144).abs() < 1e-9);
        // Duration: 3e6 × 2 ms = 6,000 s × 0.125 GB = 750 GB-s × $0.00001 = $0.0075.
        assert!((bill.service("Lambda duration") - 0.0075).abs() < 1e-12);
        // API Gateway: 1M at $1.00 + 2M at $0.50 = $2.00.
        assert!((bill.service("API Gateway HTTP API") - 2.0).abs() < 1e-12);
        // 3M RRU × $0.5 per million = $1.50; no writes.
        assert!((bill.service("DynamoDB reads") - 1.5).abs() < 1e-12);
        assert_eq!(bill.service("DynamoDB writes"), 0.0);
        // Logs: the access line {"id":"Jb3kQhGvIAMEVzA="} is 25 bytes × 3e6 = 75e6 bytes
        // = 0.0698491931 GiB × $0.50 ingestion + × $0.03 storage (30 days kept).
        let line = access_log_line(r#"{"id":"$context.requestId"}"#, "entitlements");
        assert_eq!(line, r#"{"id":"Jb3kQhGvIAMEVzA="}"#);
        let gib = 75e6 / (1024.0 * 1024.0 * 1024.0);
        assert!((bill.service("CloudWatch Logs ingestion") - gib * 0.5).abs() < 1e-12);
        assert!((bill.service("CloudWatch Logs storage") - gib * 0.03).abs() < 1e-12);
        let expected = 0.600144 + 0.0075 + 2.0 + 1.5 + gib * 0.53;
        assert!((bill.total - expected).abs() < 1e-9, "{}", bill.total);
        assert_eq!(bill.http_requests, 3_000_000.0);
        assert!((bill.per_1000_requests() - expected / 3000.0).abs() < 1e-12);
    }

    #[test]
    fn the_free_tier_takes_off_only_the_always_free_allowances() {
        let (prices, _) = prices_for_region(PRICES, "us-east-1").unwrap();
        let free = Scenario {
            free_tier: true,
            ..scenario()
        };
        let bill = bill(&free, &prices, &one_route_measured(), &facts()).unwrap();
        // 3,000,720 − 1,000,000 free = 2,000,720 × $0.20 per million.
        assert!((bill.service("Lambda requests") - 0.400144).abs() < 1e-9);
        // 750 GB-s are inside the 400,000 free.
        assert_eq!(bill.service("Lambda duration"), 0.0);
        // API Gateway has no always-free allowance.
        assert!((bill.service("API Gateway HTTP API") - 2.0).abs() < 1e-12);
        // 0.07 GB of logs are inside the 5 GB free.
        assert_eq!(bill.service("CloudWatch Logs ingestion"), 0.0);
    }

    #[test]
    fn x86_64_uses_its_own_duration_and_rate() {
        let (prices, _) = prices_for_region(PRICES, "us-east-1").unwrap();
        let x86 = Scenario {
            arch: Arch::X86_64,
            ..scenario()
        };
        let bill = bill(&x86, &prices, &one_route_measured(), &facts()).unwrap();
        // 3e6 × 4 ms = 12,000 s × 0.125 GB = 1,500 GB-s × $0.00002 = $0.03.
        assert!((bill.service("Lambda duration") - 0.03).abs() < 1e-12);
    }

    #[test]
    fn a_region_overrides_only_what_it_names() {
        let (prices, known) = prices_for_region(PRICES, "far-away-1").unwrap();
        assert!(known);
        assert_eq!(prices.region, "far-away-1");
        assert_eq!(prices.lambda.gb_second.arm64, 0.00003);
        assert_eq!(prices.lambda.per_million_requests, 0.20);
        assert_eq!(prices.dynamodb_on_demand.per_million_rru, 0.5);
        let (prices, known) = prices_for_region(PRICES, "nowhere-9").unwrap();
        assert!(!known);
        assert_eq!(prices.region, "us-east-1");
        assert_eq!(prices.lambda.gb_second.arm64, 0.00001);
    }

    #[test]
    fn a_mistyped_override_is_refused() {
        let text = PRICES.replace(
            "[regions.far-away-1.lambda]\ngb_second",
            "[regions.far-away-1.lambda]\ngb_secnd",
        );
        assert!(prices_for_region(&text, "far-away-1").is_err());
    }

    #[test]
    fn api_gateway_tiers_apply_to_the_requests_above_each_ceiling() {
        let tiers = [
            Tier {
                up_to_millions: 300.0,
                per_million: 1.0,
            },
            Tier {
                up_to_millions: f64::INFINITY,
                per_million: 0.9,
            },
        ];
        assert_eq!(tiered(0.0, &tiers), 0.0);
        assert!((tiered(300e6, &tiers) - 300.0).abs() < 1e-9);
        assert!((tiered(1_300e6, &tiers) - (300.0 + 900.0)).abs() < 1e-9);
    }

    #[test]
    fn peers_charge_on_revenue_as_published() {
        let (prices, _) = prices_for_region(PRICES, "us-east-1").unwrap();
        let paying = Scenario {
            payments_per_month: 500.0,
            revenue_per_payment: 10.0,
            ..scenario()
        };
        let fees = peer_fees(&paying, &prices.peers);
        assert_eq!(fees.revenue, 5000.0);
        assert!((fees.revenuecat - 50.0).abs() < 1e-9);
        assert!((fees.stripe_billing - 35.0).abs() < 1e-9);
        // 4 % of $5,000 + 500 × $0.40.
        assert!((fees.polar - 400.0).abs() < 1e-9);
        assert_eq!(fees.autumn, None);
        // Under RevenueCat's threshold: nothing.
        let small = Scenario {
            payments_per_month: 100.0,
            ..paying
        };
        assert_eq!(peer_fees(&small, &prices.peers).revenuecat, 0.0);
    }

    #[test]
    fn secrets_manager_mode_reads_a_secret_per_cold_start() {
        let (prices, _) = prices_for_region(PRICES, "us-east-1").unwrap();
        let mut measured = one_route_measured();
        measured
            .routes
            .insert("success".into(), route("success", true, 0.0, 0.0, 0.0, 0.0));
        let mut template = facts();
        template.founder_secrets = 2.0;
        template.secret_readers.insert("success".into(), 1.0);
        let mode = Scenario {
            secrets_manager: true,
            payments_per_month: 100.0,
            ..scenario()
        };
        let bill = bill(&mode, &prices, &measured, &template).unwrap();
        // 2 secrets × $0.40 + 100 cold starts (fewer invocations than the cap) × $0.05/10k.
        assert!((bill.service("Secrets Manager") - (0.80 + 100.0 * 0.05 / 1e4)).abs() < 1e-12);
        let environment = Scenario {
            secrets_manager: false,
            ..mode
        };
        let bill = super::bill(&environment, &prices, &measured, &template).unwrap();
        assert!((bill.service("Secrets Manager") - 0.80).abs() < 1e-12);
    }

    #[test]
    fn a_route_missing_from_the_measured_figures_is_an_error() {
        let (prices, _) = prices_for_region(PRICES, "us-east-1").unwrap();
        let mut measured = one_route_measured();
        measured.routes.remove("usage");
        let error = bill(&scenario(), &prices, &measured, &facts()).unwrap_err();
        assert!(error.contains("[routes.usage]"), "{error}");
    }

    #[test]
    fn the_committed_prices_parse_with_every_field_the_model_needs() {
        let text = std::fs::read_to_string(prices_path()).unwrap();
        let (prices, known) = prices_for_region(&text, "us-east-1").unwrap();
        assert!(known);
        assert!(prices.lambda.per_million_requests > 0.0);
        for sources in [
            &prices.lambda.sources,
            &prices.api_gateway_http.sources,
            &prices.dynamodb_on_demand.sources,
            &prices.eventbridge.sources,
            &prices.cloudwatch.sources,
            &prices.secrets_manager.sources,
            &prices.sqs_standard.sources,
        ] {
            assert!(
                sources
                    .iter()
                    .any(|s| s.starts_with("https://aws.amazon.com/"))
            );
        }
        // Every region table must still parse into complete prices.
        let table: toml::Table = toml::from_str(&text).unwrap();
        for region in table["regions"].as_table().unwrap().keys() {
            prices_for_region(&text, region).unwrap();
        }
        // Removing any field the model reads makes the file unreadable, not silently zero.
        let without = text.replace("per_million_wru = 0.625\n", "");
        assert!(prices_for_region(&without, "us-east-1").is_err());
    }

    #[test]
    fn the_committed_measured_figures_cover_every_route_the_model_prices() {
        let text = std::fs::read_to_string(measured_path()).unwrap();
        let measured = parse_measured(&text).unwrap();
        let volume = monthly_invocations(&scenario());
        for route in volume.keys() {
            measured.route(route).unwrap();
        }
        // The first route's line (the header comment names the field too).
        let without = text.replacen("\nlog_bytes_per_1000 =", "\nlog_bytes =", 1);
        assert!(parse_measured(&without).is_err());
    }

    #[test]
    fn the_template_is_read_for_what_it_deploys() {
        let text = std::fs::read_to_string(crate::local_dynamodb::template_path()).unwrap();
        let facts = template_facts(&text).unwrap();
        assert!(facts.access_log_format.contains("$context.requestId"));
        assert!(facts.alarm_metrics >= 1.0);
        assert!(facts.alarm_metrics_webhook_only >= 1.0);
        assert_eq!(facts.founder_secrets, 2.0);
        assert_eq!(facts.webhook_secrets, 1.0);
        assert_eq!(facts.secret_readers.get("webhook"), Some(&1.0));
        assert_eq!(facts.secret_readers.get("status"), None);
        assert!(facts.point_in_time_recovery);
        assert!(facts.log_retention_days > 0.0);
        // Every variable of the format is replaced, and the line is JSON.
        let line = access_log_line(&facts.access_log_format, "usage");
        assert!(!line.contains("$context"), "{line}");
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["routeKey"], "POST /server/usage");
        assert!(
            parsed["userArn"]
                .as_str()
                .unwrap()
                .starts_with("arn:aws:sts::")
        );
    }

    #[test]
    fn a_metric_math_alarm_counts_each_metric_it_reads() {
        let template = r#"
Parameters:
  ApiKeySecretName: { Type: String }
Globals:
  Function:
    MemorySize: 256
Resources:
  Api:
    Type: AWS::Serverless::HttpApi
    Properties:
      AccessLogSettings:
        Format: '{"id":"$context.requestId"}'
  Plain:
    Type: AWS::CloudWatch::Alarm
    Properties: { MetricName: Errors }
  OnlyWithWebhook:
    Type: AWS::CloudWatch::Alarm
    Condition: HasAccessEventsWebhook
    Properties: { MetricName: Errors }
  Ratio:
    Type: AWS::CloudWatch::Alarm
    Properties:
      Metrics:
        - Id: e
          Expression: "a / b"
        - Id: a
          MetricStat: { Metric: { MetricName: A } }
        - Id: b
          MetricStat: { Metric: { MetricName: B } }
"#;
        let facts = template_facts(template).unwrap();
        assert_eq!(facts.alarm_metrics, 3.0);
        assert_eq!(facts.alarm_metrics_webhook_only, 1.0);
        assert_eq!(facts.founder_secrets, 1.0);
        assert!(!facts.point_in_time_recovery);
        assert_eq!(facts.memory_mb, 256.0);
    }

    #[test]
    fn options_need_the_three_traffic_figures_and_one_way_to_give_payments() {
        let args = |text: &str| -> Vec<String> { text.split(' ').map(String::from).collect() };
        let options = Options::parse(&args(
            "--mau 10000 --checks-per-user-day 50 --usage-per-user-day 20",
        ))
        .unwrap();
        assert_eq!(options.scenario.payments_per_month, 500.0);
        let options = Options::parse(&args(
            "--mau 10000 --checks-per-user-day 50 --usage-per-user-day 20 --purchases-per-month 200 --arch x86_64",
        ))
        .unwrap();
        assert_eq!(options.scenario.payments_per_month, 200.0);
        assert_eq!(options.paying_share, 0.02);
        assert_eq!(options.scenario.arch, Arch::X86_64);
        assert!(Options::parse(&args("--mau 10000 --checks-per-user-day 50")).is_err());
        assert!(Options::parse(&args(
            "--mau 1 --checks-per-user-day 1 --usage-per-user-day 1 --purchases-per-month 1 --paying-share 0.1"
        ))
        .is_err());
        assert!(
            Options::parse(&args(
                "--mau -5 --checks-per-user-day 1 --usage-per-user-day 1"
            ))
            .is_err()
        );
        assert!(
            Options::parse(&args(
                "--mau 1 --checks-per-user-day 1 --usage-per-user-day 1 --arch sparc"
            ))
            .is_err()
        );
    }

    /// The book's table is the command's output from the committed files: when the prices
    /// or the measured figures change, the page is re-pasted.
    #[test]
    fn the_book_shows_the_table_of_the_committed_files() {
        let command = "--mau 10000 --checks-per-user-day 50 --usage-per-user-day 20 --table";
        let args: Vec<String> = command.split(' ').map(String::from).collect();
        let output = run(&args).unwrap();
        let page = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/src/cost.md"),
        )
        .unwrap();
        for row in output.lines().filter(|line| line.starts_with('|')) {
            assert!(
                page.contains(row),
                "docs/src/cost.md lacks the row\n{row}\nre-paste the output of `cargo run -p dev -- cost {command}`"
            );
        }
    }

    #[test]
    fn money_and_counts_read_like_a_bill() {
        assert_eq!(usd(1234.567), "$1,234.57");
        assert_eq!(usd(0.004), "$0.00");
        assert_eq!(count(21_000_720.0), "21,000,720");
        assert_eq!(count(999.0), "999");
    }
}
