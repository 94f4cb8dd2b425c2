//! The SAM template, checked offline for what the code relies on: every route the API
//! documents is in the template with the right authorization (the user's JWT on
//! `/payment`, IAM on `/server`), the table streams new images, and the access-event
//! publisher reads that stream with a dead-letter queue and may publish to its bus only.
//! And, as deployed with given parameters (conditions evaluated): every function's
//! reserved concurrency, the API's access logs, reconcile's alarmed dead-letter queue,
//! which function gets which secret and how (`SecretsSource`), the optional key for the
//! functions' environment, and a reason on every checkov suppression.

use serde_json::Value;

fn load(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("{}/../{name}", env!("CARGO_MANIFEST_DIR")))
        .expect("readable");
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("YAML");
    // CloudFormation's short tags (`!Ref`, `!Sub`...) become their values.
    serde_json::to_value(dev::iam::untag(yaml)).expect("JSON-compatible")
}

/// `(method, path, authorizer)` of every HTTP API route in the template.
fn routes(template: &Value) -> Vec<(String, String, String)> {
    let mut routes = Vec::new();
    for resource in template["Resources"]
        .as_object()
        .expect("resources")
        .values()
    {
        for event in resource["Properties"]["Events"]
            .as_object()
            .into_iter()
            .flat_map(|events| events.values())
            .filter(|event| event["Type"] == "HttpApi")
        {
            let properties = &event["Properties"];
            routes.push((
                properties["Method"]
                    .as_str()
                    .expect("method")
                    .to_lowercase(),
                properties["Path"].as_str().expect("path").to_owned(),
                properties["Auth"]["Authorizer"]
                    .as_str()
                    .unwrap_or("JwtAuthorizer (default)")
                    .to_owned(),
            ));
        }
    }
    routes
}

#[test]
fn every_documented_route_is_deployed_with_its_authorization() {
    let template = load("template.yaml");
    let openapi = load("openapi.yaml");
    let deployed = routes(&template);
    assert_eq!(
        template["Resources"]["HttpApi"]["Properties"]["Auth"]["DefaultAuthorizer"],
        "JwtAuthorizer"
    );
    assert_eq!(
        template["Resources"]["HttpApi"]["Properties"]["Auth"]["EnableIamAuthorizer"],
        true
    );
    let mut documented = 0;
    for (path, operations) in openapi["paths"].as_object().expect("paths") {
        // The webhook is the function's URL, not an API Gateway route.
        if path == "/webhook" {
            continue;
        }
        for (method, operation) in operations.as_object().expect("operations") {
            let route = deployed
                .iter()
                .find(|(m, p, _)| m == method && p == path)
                .unwrap_or_else(|| panic!("{method} {path} is documented but not deployed"));
            // `security: []` in the document: public, no authorizer in the template.
            let public = operation
                .get("security")
                .and_then(|s| s.as_array())
                .is_some_and(|s| s.is_empty());
            let expected = if path.starts_with("/server/") {
                "AWS_IAM"
            } else if public {
                "NONE"
            } else {
                "JwtAuthorizer (default)"
            };
            assert_eq!(route.2, expected, "{method} {path}");
            documented += 1;
        }
    }
    assert_eq!(
        documented,
        deployed.len(),
        "every deployed route is documented"
    );
}

#[test]
fn access_events_flow_from_the_stream_to_one_bus_with_a_dead_letter_queue() {
    let template = load("template.yaml");
    let resources = &template["Resources"];
    assert_eq!(
        resources["PaymentsTable"]["Properties"]["StreamSpecification"]["StreamViewType"],
        "NEW_IMAGE"
    );
    let publisher = &resources["AccessEventsFunction"]["Properties"];
    let stream = &publisher["Events"]["Stream"];
    assert_eq!(stream["Type"], "DynamoDB");
    assert_eq!(
        stream["Properties"]["FunctionResponseTypes"][0],
        "ReportBatchItemFailures"
    );
    assert_eq!(
        stream["Properties"]["DestinationConfig"]["OnFailure"]["Type"], "SQS",
        "records that keep failing go to the dead-letter queue"
    );
    let filter = stream["Properties"]["FilterCriteria"]["Filters"][0]["Pattern"]
        .as_str()
        .expect("a filter");
    assert!(
        filter.contains(paywall::store::ACCESS_EVENT_PREFIX),
        "{filter}"
    );
    assert!(resources["AccessEventsDeadLetterAlarm"].is_object());

    // Least privilege: PutEvents on the named bus only, and nothing else may publish.
    for (name, resource) in resources.as_object().expect("resources") {
        for statement in resource["Properties"]["Policies"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|policy| policy["Statement"].as_array().into_iter().flatten())
        {
            let actions = statement["Action"].to_string();
            if actions.contains("events:PutEvents") {
                assert_eq!(name, "AccessEventsFunction", "{name} may publish events");
                let target = statement["Resource"].to_string();
                assert!(
                    target.contains("event-bus/${AccessEventBusName}"),
                    "{target}"
                );
                assert!(!target.contains('*'), "{target}");
            }
        }
    }
}

// What the stack deploys for given parameter values: the template's short tags in their
// long form (`!If` → `{"Fn::If": …}`), conditions evaluated, `Fn::If` resolved,
// `AWS::NoValue` removed, and parameters substituted into `Ref` and `Fn::Sub`.

/// The template with CloudFormation's short tags in their long form.
fn load_long_form(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("{}/../{name}", env!("CARGO_MANIFEST_DIR")))
        .expect("readable");
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("YAML");
    serde_json::to_value(long_form(yaml)).expect("JSON-compatible")
}

fn long_form(value: serde_yaml_ng::Value) -> serde_yaml_ng::Value {
    use serde_yaml_ng::Value as Y;
    match value {
        Y::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!');
            let mut inner = long_form(tagged.value);
            if name == "GetAtt"
                && let Y::String(target) = &inner
            {
                let (resource, attribute) = target.split_once('.').expect("Resource.Attribute");
                inner = Y::Sequence(vec![resource.into(), attribute.into()]);
            }
            let key = if name == "Ref" || name == "Condition" {
                name.to_owned()
            } else {
                format!("Fn::{name}")
            };
            let mut map = serde_yaml_ng::Mapping::new();
            map.insert(Y::String(key), inner);
            Y::Mapping(map)
        }
        Y::Sequence(items) => Y::Sequence(items.into_iter().map(long_form).collect()),
        Y::Mapping(map) => Y::Mapping(map.into_iter().map(|(k, v)| (k, long_form(v))).collect()),
        other => other,
    }
}

struct Stack {
    template: Value,
    parameters: std::collections::BTreeMap<String, String>,
}

impl Stack {
    /// The template deployed with its defaults, except `overrides`.
    fn deploy(overrides: &[(&str, &str)]) -> Stack {
        let template = load_long_form("template.yaml");
        let mut parameters = std::collections::BTreeMap::new();
        for (name, parameter) in template["Parameters"].as_object().expect("parameters") {
            let default = match &parameter["Default"] {
                Value::String(text) => text.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            parameters.insert(name.clone(), default);
        }
        for (name, value) in overrides {
            assert!(parameters.contains_key(*name), "no parameter {name}");
            parameters.insert((*name).to_owned(), (*value).to_owned());
        }
        Stack {
            template,
            parameters,
        }
    }

    fn condition(&self, name: &str) -> bool {
        self.truth(&self.template["Conditions"][name])
    }

    fn truth(&self, condition: &Value) -> bool {
        let (function, arguments) = condition
            .as_object()
            .and_then(|map| map.iter().next())
            .unwrap_or_else(|| panic!("not a condition: {condition}"));
        let arguments = arguments.as_array();
        match function.as_str() {
            "Condition" => self.condition(condition["Condition"].as_str().expect("a name")),
            "Fn::Equals" => {
                let pair = arguments.expect("two values");
                self.scalar(&pair[0]) == self.scalar(&pair[1])
            }
            "Fn::Not" => !self.truth(&arguments.expect("one condition")[0]),
            "Fn::Or" => arguments.expect("conditions").iter().any(|c| self.truth(c)),
            "Fn::And" => arguments.expect("conditions").iter().all(|c| self.truth(c)),
            other => panic!("unknown condition function {other}"),
        }
    }

    fn scalar(&self, value: &Value) -> String {
        match self.resolve(value) {
            Some(Value::String(text)) => text,
            Some(other) => other.to_string(),
            None => panic!("no value: {value}"),
        }
    }

    /// `None` where the value is `AWS::NoValue`.
    fn resolve(&self, value: &Value) -> Option<Value> {
        match value {
            Value::Object(map) if map.len() == 1 && map.contains_key("Fn::If") => {
                let branches = map["Fn::If"].as_array().expect("condition, then, else");
                let name = branches[0].as_str().expect("a condition name");
                let chosen = if self.condition(name) {
                    &branches[1]
                } else {
                    &branches[2]
                };
                self.resolve(chosen)
            }
            Value::Object(map) if map.len() == 1 && map.contains_key("Ref") => {
                let name = map["Ref"].as_str().expect("a name");
                if name == "AWS::NoValue" {
                    None
                } else if let Some(parameter) = self.parameters.get(name) {
                    Some(Value::String(parameter.clone()))
                } else {
                    Some(value.clone())
                }
            }
            Value::Object(map)
                if map.len() == 1 && map.get("Fn::Sub").is_some_and(Value::is_string) =>
            {
                let mut text = map["Fn::Sub"].as_str().expect("a string").to_owned();
                for (name, parameter) in &self.parameters {
                    text = text.replace(&format!("${{{name}}}"), parameter);
                }
                Some(serde_json::json!({ "Fn::Sub": text }))
            }
            Value::Object(map) => Some(Value::Object(
                map.iter()
                    .filter_map(|(k, v)| self.resolve(v).map(|v| (k.clone(), v)))
                    .collect(),
            )),
            Value::Array(items) => Some(Value::Array(
                items.iter().filter_map(|v| self.resolve(v)).collect(),
            )),
            other => Some(other.clone()),
        }
    }

    /// The resources deployed (those whose condition holds), resolved.
    fn resources(&self) -> serde_json::Map<String, Value> {
        self.template["Resources"]
            .as_object()
            .expect("resources")
            .iter()
            .filter(|(_, resource)| {
                resource["Condition"]
                    .as_str()
                    .is_none_or(|name| self.condition(name))
            })
            .map(|(name, resource)| (name.clone(), self.resolve(resource).expect("a resource")))
            .collect()
    }

    fn functions(&self) -> Vec<(String, Value)> {
        self.resources()
            .into_iter()
            .filter(|(_, resource)| resource["Type"] == "AWS::Serverless::Function")
            .collect()
    }

    fn globals(&self) -> Value {
        self.resolve(&self.template["Globals"]["Function"])
            .expect("function globals")
    }
}

const API_FUNCTIONS: [&str; 5] = [
    "StatusFunction",
    "CreateCheckoutFunction",
    "SuccessFunction",
    "PortalFunction",
    "ServerFunction",
];

/// The reserved concurrency a function gets, if any.
fn reserved(function: &Value) -> Option<u64> {
    match &function["Properties"]["ReservedConcurrentExecutions"] {
        Value::Null => None,
        Value::Number(n) => Some(n.as_u64().expect("a whole number")),
        Value::String(text) => Some(text.parse().expect("a number")),
        other => panic!("not a concurrency: {other}"),
    }
}

fn allowed_by_pattern(stack: &Stack, parameter: &str, value: &str) -> bool {
    let pattern = stack.template["Parameters"][parameter]["AllowedPattern"]
        .as_str()
        .unwrap_or_else(|| panic!("{parameter} has an AllowedPattern"));
    let schema = serde_json::json!({ "type": "string", "pattern": pattern });
    jsonschema::draft202012::new(&schema)
        .expect("a valid pattern")
        .is_valid(&Value::String(value.to_owned()))
}

#[test]
fn every_function_reserves_concurrency_and_the_public_webhook_cannot_starve_the_api() {
    let stack = Stack::deploy(&[]);
    for (name, function) in stack.functions() {
        let reserved =
            reserved(&function).unwrap_or_else(|| panic!("{name} has no reserved concurrency"));
        assert!(reserved > 0, "{name}: 0 would throttle every invocation");
    }
    let functions: std::collections::BTreeMap<_, _> = stack.functions().into_iter().collect();
    let api: u64 = stack.parameters["ApiReservedConcurrency"]
        .parse()
        .expect("a number by default");
    let webhook: u64 = stack.parameters["WebhookReservedConcurrency"]
        .parse()
        .expect("a number by default");
    for name in API_FUNCTIONS {
        assert_eq!(reserved(&functions[name]), Some(api), "{name}");
    }
    assert_eq!(reserved(&functions["WebhookFunction"]), Some(webhook));
    assert_eq!(
        reserved(&functions["ReconcileFunction"]),
        Some(1),
        "an hourly run never overlaps another"
    );
    // What the defaults reserve leaves Lambda's 100 unreserved executions in an account
    // with the default limit of 1000, with room for the founder's other functions.
    let total: u64 = functions.values().filter_map(reserved).sum();
    assert!(total <= 200, "{total} reserved by default");

    // "none" turns each reservation off; a value that would be 0 never gets through.
    for parameter in ["ApiReservedConcurrency", "WebhookReservedConcurrency"] {
        for value in ["none", "1", "20", "1000"] {
            assert!(
                allowed_by_pattern(&stack, parameter, value),
                "{parameter}={value}"
            );
        }
        for value in ["0", "00", "-1", "", "None", "20 "] {
            assert!(
                !allowed_by_pattern(&stack, parameter, value),
                "{parameter}={value}"
            );
        }
    }
    let stack = Stack::deploy(&[("ApiReservedConcurrency", "none")]);
    for (name, function) in stack.functions() {
        let api_function = API_FUNCTIONS.contains(&name.as_str());
        assert_eq!(reserved(&function).is_none(), api_function, "{name}");
    }
    let stack = Stack::deploy(&[("WebhookReservedConcurrency", "none")]);
    for (name, function) in stack.functions() {
        assert_eq!(
            reserved(&function).is_none(),
            name == "WebhookFunction",
            "{name}"
        );
    }
    // Reconcile and access-events keep theirs unless both are none.
    let stack = Stack::deploy(&[
        ("ApiReservedConcurrency", "none"),
        ("WebhookReservedConcurrency", "none"),
    ]);
    for (name, function) in stack.functions() {
        assert_eq!(reserved(&function), None, "{name}");
    }
}

#[test]
fn the_http_api_writes_json_access_logs_without_credentials_to_a_retained_group() {
    let stack = Stack::deploy(&[]);
    let resources = stack.resources();
    let settings = &resources["HttpApi"]["Properties"]["AccessLogSettings"];
    let destination = settings["DestinationArn"]["Fn::Sub"]
        .as_str()
        .expect("the log group's ARN");
    let group = destination
        .rsplit_once(":log-group:${")
        .and_then(|(_, rest)| rest.strip_suffix('}'))
        .unwrap_or_else(|| panic!("not a log group of this stack: {destination}"));
    assert_eq!(resources[group]["Type"], "AWS::Logs::LogGroup");
    assert!(
        resources[group]["Properties"]["RetentionInDays"]
            .as_u64()
            .is_some_and(|days| days > 0),
        "{group} keeps its logs for a bounded time"
    );

    let format: serde_json::Map<String, Value> =
        serde_json::from_str(settings["Format"].as_str().expect("a format")).expect("JSON");
    for field in [
        "requestId",
        "ip",
        "requestTime",
        "httpMethod",
        "routeKey",
        "status",
        "responseLength",
        "integrationError",
        "authorizerError",
    ] {
        assert!(format.contains_key(field), "{field} is logged");
    }
    assert_eq!(format["authorizerError"], "$context.authorizer.error");
    for (field, variable) in &format {
        let variable = variable.as_str().expect("a variable").to_lowercase();
        assert!(variable.starts_with("$context."), "{field}: {variable}");
        for secret in ["header", "authorization", "body", "claims"] {
            assert!(!variable.contains(secret), "{field} logs {variable}");
        }
    }
}

#[test]
fn failed_or_undelivered_reconcile_runs_reach_an_alarmed_dead_letter_queue() {
    let stack = Stack::deploy(&[]);
    let resources = stack.resources();
    let reconcile = &resources["ReconcileFunction"]["Properties"];
    let queue = serde_json::json!({ "Fn::GetAtt": ["ReconcileDeadLetterQueue", "Arn"] });
    assert_eq!(reconcile["DeadLetterQueue"]["Type"], "SQS");
    assert_eq!(reconcile["DeadLetterQueue"]["TargetArn"], queue);
    // Every schedule (EventBridge invoking a function asynchronously) has a dead-letter
    // queue for the events it could not deliver.
    let mut schedules = 0;
    for (function, resource) in stack.functions() {
        for (event, definition) in resource["Properties"]["Events"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, definition)| definition["Type"] == "Schedule")
        {
            schedules += 1;
            assert!(
                resource["Properties"]["DeadLetterQueue"]["TargetArn"].is_object(),
                "{function} has a dead-letter queue"
            );
            let target = &definition["Properties"]["DeadLetterConfig"]["Arn"];
            assert!(
                target.is_object(),
                "{function}.{event} has a dead-letter queue"
            );
            // SAM names the rule after the function and the event: only that rule may send.
            let rule = serde_json::json!({ "Fn::GetAtt": [format!("{function}{event}"), "Arn"] });
            let queue_name = target["Fn::GetAtt"][0].as_str().expect("a queue");
            assert!(
                resources.values().any(|policy| {
                    policy["Type"] == "AWS::SQS::QueuePolicy"
                        && policy["Properties"]["Queues"]
                            .as_array()
                            .is_some_and(|queues| {
                                queues == &[serde_json::json!({ "Ref": queue_name })]
                            })
                        && policy["Properties"]["PolicyDocument"]["Statement"]
                            .as_array()
                            .is_some_and(|statements| {
                                statements.iter().all(|statement| {
                                    statement["Principal"]["Service"] == "events.amazonaws.com"
                                        && statement["Action"] == "sqs:SendMessage"
                                        && statement["Condition"]["ArnEquals"]["aws:SourceArn"]
                                            == rule
                                })
                            })
                }),
                "EventBridge may send {function}.{event}'s undelivered events to {queue_name}"
            );
        }
    }
    assert_eq!(schedules, 1, "the hourly reconcile");
    assert_eq!(
        reconcile["Events"]["Hourly"]["Properties"]["DeadLetterConfig"]["Arn"],
        queue
    );
    assert_eq!(
        resources["ReconcileDeadLetterQueue"]["Properties"]["SqsManagedSseEnabled"],
        true
    );
    let depth = serde_json::json!([{
        "Name": "QueueName",
        "Value": { "Fn::GetAtt": ["ReconcileDeadLetterQueue", "QueueName"] },
    }]);
    assert!(
        resources.values().any(|alarm| {
            let properties = &alarm["Properties"];
            alarm["Type"] == "AWS::CloudWatch::Alarm"
                && properties["Namespace"] == "AWS/SQS"
                && properties["MetricName"] == "ApproximateNumberOfMessagesVisible"
                && properties["Dimensions"] == depth
                && properties["Threshold"] == 1
                && properties["AlarmActions"]
                    .as_array()
                    .is_some_and(|actions| {
                        actions.contains(&serde_json::json!({ "Ref": "AlarmTopic" }))
                    })
        }),
        "any message in the reconcile dead-letter queue notifies the alarm topic"
    );
}

/// Every statement of a function's inline policies.
fn statements(function: &Value) -> Vec<Value> {
    function["Properties"]["Policies"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|policy| policy["Statement"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[test]
fn secrets_reach_the_functions_as_secrets_source_says_and_no_further() {
    // Which function needs which secret: the variable with its value, the one with the
    // secret's name, and the parameter naming the secret.
    let api_key = (
        "DODO_PAYMENTS_API_KEY",
        "DODO_PAYMENTS_API_KEY_SECRET_ID",
        "DodoApiKeySecretName",
    );
    let webhook_secret = (
        "DODO_PAYMENTS_WEBHOOK_SECRET",
        "DODO_PAYMENTS_WEBHOOK_SECRET_ID",
        "DodoWebhookSecretName",
    );
    let needs = [
        ("CreateCheckoutFunction", api_key),
        ("SuccessFunction", api_key),
        ("PortalFunction", api_key),
        ("ReconcileFunction", api_key),
        ("WebhookFunction", webhook_secret),
    ];
    let secret_variables = |function: &Value| -> Vec<String> {
        function["Properties"]["Environment"]["Variables"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(name, _)| name.clone())
            .filter(|name| name.starts_with("DODO_PAYMENTS_"))
            .collect()
    };
    let secrets_manager_statements = |function: &Value| -> Vec<Value> {
        statements(function)
            .into_iter()
            .filter(|statement| statement.to_string().contains("secretsmanager:"))
            .collect()
    };

    for (mode, overrides) in [
        ("environment", vec![]),
        (
            "secrets-manager",
            vec![
                ("SecretsSource", "secrets-manager"),
                ("DodoApiKeySecretName", "shop/dodo-key"),
                ("DodoWebhookSecretName", "shop/dodo-whsec"),
            ],
        ),
    ] {
        let stack = Stack::deploy(&overrides);
        assert_eq!(stack.parameters["SecretsSource"], mode);
        let globals = stack.globals();
        assert!(
            secret_variables(&globals).is_empty(),
            "no secret for every function"
        );
        for (name, function) in stack.functions() {
            let need = needs.iter().find(|(function, _)| *function == name);
            let variables = secret_variables(&function);
            let grants = secrets_manager_statements(&function);
            let Some((_, (variable, id_variable, secret))) = need else {
                assert!(variables.is_empty(), "{mode}: {name} gets {variables:?}");
                assert!(grants.is_empty(), "{mode}: {name} may read a secret");
                continue;
            };
            let secret_name = &stack.parameters[*secret];
            let environment = &function["Properties"]["Environment"]["Variables"];
            if mode == "environment" {
                assert_eq!(variables, [variable.to_string()], "{mode}: {name}");
                assert_eq!(
                    environment[variable]["Fn::Sub"],
                    format!("{{{{resolve:secretsmanager:{secret_name}}}}}"),
                    "{name}"
                );
                assert!(grants.is_empty(), "{mode}: {name} may read a secret");
            } else {
                assert_eq!(variables, [id_variable.to_string()], "{mode}: {name}");
                assert_eq!(environment[id_variable], *secret_name);
                // GetSecretValue on exactly that secret (Secrets Manager appends six random
                // characters to a secret's name in its ARN), and nothing else.
                assert_eq!(
                    grants,
                    [serde_json::json!({
                        "Effect": "Allow",
                        "Action": ["secretsmanager:GetSecretValue"],
                        "Resource": { "Fn::Sub": format!(
                            "arn:${{AWS::Partition}}:secretsmanager:${{AWS::Region}}:${{AWS::AccountId}}:secret:{secret_name}-??????"
                        ) },
                    })],
                    "{mode}: {name}"
                );
            }
        }
    }
}

#[test]
fn a_customer_managed_key_encrypts_every_functions_environment_when_given() {
    let key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let stack = Stack::deploy(&[]);
    assert!(
        stack.globals()["KmsKeyArn"].is_null(),
        "Lambda's own key by default"
    );
    assert!(allowed_by_pattern(&stack, "EnvironmentKmsKeyArn", ""));
    assert!(allowed_by_pattern(&stack, "EnvironmentKmsKeyArn", key));
    assert!(!allowed_by_pattern(
        &stack,
        "EnvironmentKmsKeyArn",
        "alias/paywall"
    ));
    let stack = Stack::deploy(&[("EnvironmentKmsKeyArn", key)]);
    assert_eq!(stack.globals()["KmsKeyArn"], key);
    for (name, function) in stack.functions() {
        // No function sets its own key (or none): the global one applies to all.
        assert!(
            function["Properties"]["KmsKeyArn"].is_null(),
            "{name} overrides the key"
        );
    }
}

#[test]
fn every_checkov_suppression_names_its_check_and_says_why() {
    let template = load("template.yaml");
    let mut suppressions = 0;
    for (name, resource) in template["Resources"].as_object().expect("resources") {
        for skip in resource["Metadata"]["checkov"]["skip"]
            .as_array()
            .into_iter()
            .flatten()
        {
            suppressions += 1;
            let id = skip["id"].as_str().unwrap_or_default();
            assert!(id.starts_with("CKV_AWS_"), "{name}: {skip}");
            let comment = skip["comment"].as_str().unwrap_or_default();
            assert!(comment.len() > 20, "{name} {id}: no reason given");
        }
    }
    assert!(suppressions > 0);
}

/// `AccessEventsWebhookUrl` set: a generated secret, an API-key connection that sends it,
/// an API destination for the URL, a rule matching exactly the access events on the
/// access-event bus with the day-long retry policy and an alarmed, encrypted dead-letter
/// queue only that rule may send to, and a role that may invoke that destination only.
/// Unset (the default): none of it.
#[test]
fn access_events_reach_a_webhook_through_an_api_destination_when_a_url_is_given() {
    const WEBHOOK: [&str; 8] = [
        "AccessEventsWebhookSecret",
        "AccessEventsWebhookConnection",
        "AccessEventsWebhookDestination",
        "AccessEventsWebhookRule",
        "AccessEventsWebhookRole",
        "AccessEventsWebhookDeadLetterQueue",
        "AccessEventsWebhookDeadLetterQueuePolicy",
        "AccessEventsWebhookDeadLetterAlarm",
    ];
    let off = Stack::deploy(&[]);
    let deployed = off.resources();
    for id in WEBHOOK {
        assert!(!deployed.contains_key(id), "{id} without a webhook URL");
    }
    assert!(allowed_by_pattern(&off, "AccessEventsWebhookUrl", ""));
    assert!(allowed_by_pattern(
        &off,
        "AccessEventsWebhookUrl",
        "https://app.example.com/api/paywall-events"
    ));
    for refused in [
        "http://app.example.com/hook",
        "https://",
        "https://a b",
        "ftp://x",
    ] {
        assert!(
            !allowed_by_pattern(&off, "AccessEventsWebhookUrl", refused),
            "{refused}"
        );
    }

    let url = "https://app.example.com/api/paywall-events";
    let on = Stack::deploy(&[
        ("AccessEventsWebhookUrl", url),
        ("AccessEventBusName", "paywall-events"),
    ]);
    let resources = on.resources();
    for id in WEBHOOK {
        assert!(resources.contains_key(id), "{id} with a webhook URL");
    }
    let get_att = |id: &str, attribute: &str| serde_json::json!({ "Fn::GetAtt": [id, attribute] });
    let properties = |id: &str| resources[id]["Properties"].clone();

    assert!(properties("AccessEventsWebhookSecret")["GenerateSecretString"].is_object());
    let connection = properties("AccessEventsWebhookConnection");
    assert_eq!(connection["AuthorizationType"], "API_KEY");
    let api_key = &connection["AuthParameters"]["ApiKeyAuthParameters"];
    assert_eq!(
        api_key["ApiKeyName"],
        dev::local_stream::WEBHOOK_SECRET_HEADER
    );
    assert_eq!(
        api_key["ApiKeyValue"],
        serde_json::json!({
            "Fn::Sub": "{{resolve:secretsmanager:${AccessEventsWebhookSecret}:SecretString}}"
        }),
        "the value is resolved from the secret at deploy time, never written in the template"
    );
    // A new SecretsRevision changes the connection, so a redeploy updates it: it takes a
    // rotated value, and authorizes again a connection a 401 or 407 de-authorized.
    let revised = Stack::deploy(&[
        ("AccessEventsWebhookUrl", url),
        ("AccessEventBusName", "paywall-events"),
        ("SecretsRevision", "2"),
    ]);
    let revised_connection =
        revised.resources()["AccessEventsWebhookConnection"]["Properties"].clone();
    assert_ne!(revised_connection, connection);
    assert_eq!(
        revised_connection["Description"],
        serde_json::json!({ "Fn::Sub": "Access events webhook (secrets revision 2)" })
    );
    // The URL may carry a token: masked in describe-stacks, and in no output.
    assert_eq!(
        on.template["Parameters"]["AccessEventsWebhookUrl"]["NoEcho"],
        true
    );
    let outputs = on.template["Outputs"].to_string();
    assert!(!outputs.contains("AccessEventsWebhookUrl"), "{outputs}");

    let destination = properties("AccessEventsWebhookDestination");
    assert_eq!(destination["HttpMethod"], "POST");
    assert_eq!(destination["InvocationEndpoint"], url);
    assert_eq!(
        destination["ConnectionArn"],
        get_att("AccessEventsWebhookConnection", "Arn")
    );
    assert_eq!(destination["InvocationRateLimitPerSecond"], "10");

    let rule = properties("AccessEventsWebhookRule");
    assert_eq!(rule["EventBusName"], "paywall-events");
    assert_eq!(
        rule["EventPattern"]["source"],
        serde_json::json!([paywall::access_events::EVENT_SOURCE])
    );
    assert_eq!(
        rule["EventPattern"]["detail-type"],
        serde_json::json!([paywall::access_events::EVENT_DETAIL_TYPE])
    );
    assert_eq!(
        rule["EventPattern"]["account"],
        serde_json::json!([{ "Ref": "AWS::AccountId" }])
    );
    let targets = rule["Targets"].as_array().expect("targets");
    assert_eq!(targets.len(), 1);
    let target = &targets[0];
    assert_eq!(
        target["Arn"],
        get_att("AccessEventsWebhookDestination", "Arn")
    );
    assert_eq!(target["RoleArn"], get_att("AccessEventsWebhookRole", "Arn"));
    assert_eq!(target["RetryPolicy"]["MaximumEventAgeInSeconds"], 86400);
    assert_eq!(target["RetryPolicy"]["MaximumRetryAttempts"], 185);
    assert_eq!(
        target["DeadLetterConfig"]["Arn"],
        get_att("AccessEventsWebhookDeadLetterQueue", "Arn")
    );

    // The rule's role: EventBridge may assume it, and it may invoke this destination only.
    let role = properties("AccessEventsWebhookRole");
    let trust = role["AssumeRolePolicyDocument"]["Statement"]
        .as_array()
        .expect("trust");
    assert!(trust.iter().all(|s| {
        s["Principal"] == serde_json::json!({ "Service": "events.amazonaws.com" })
            && s["Action"] == "sts:AssumeRole"
    }));
    let granted: Vec<(Value, Value)> = role["Policies"]
        .as_array()
        .expect("policies")
        .iter()
        .flat_map(|p| {
            p["PolicyDocument"]["Statement"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|s| {
            assert_eq!(s["Effect"], "Allow");
            (s["Action"].clone(), s["Resource"].clone())
        })
        .collect();
    assert_eq!(
        granted,
        [(
            serde_json::json!("events:InvokeApiDestination"),
            get_att("AccessEventsWebhookDestination", "Arn")
        )]
    );
    // The permissions check lists it as a role it does not hold to calls.
    let roles = dev::iam::Roles::from_template(
        &std::fs::read_to_string(format!("{}/../template.yaml", env!("CARGO_MANIFEST_DIR")))
            .expect("readable"),
    )
    .expect("the roles");
    assert!(
        roles
            .service_roles()
            .iter()
            .any(|r| r.logical_id == "AccessEventsWebhookRole")
    );

    // Only this rule may send to its dead-letter queue; the queue is encrypted, and a
    // message in it notifies the alarm topic.
    let policy = properties("AccessEventsWebhookDeadLetterQueuePolicy");
    assert_eq!(
        policy["Queues"],
        serde_json::json!([{ "Ref": "AccessEventsWebhookDeadLetterQueue" }])
    );
    let statements = policy["PolicyDocument"]["Statement"]
        .as_array()
        .expect("statements");
    assert_eq!(statements.len(), 1);
    assert_eq!(
        statements[0]["Principal"]["Service"],
        "events.amazonaws.com"
    );
    assert_eq!(statements[0]["Action"], "sqs:SendMessage");
    assert_eq!(
        statements[0]["Condition"]["ArnEquals"]["aws:SourceArn"],
        get_att("AccessEventsWebhookRule", "Arn")
    );
    assert_eq!(
        properties("AccessEventsWebhookDeadLetterQueue")["SqsManagedSseEnabled"],
        true
    );
    let alarm = properties("AccessEventsWebhookDeadLetterAlarm");
    assert_eq!(alarm["MetricName"], "ApproximateNumberOfMessagesVisible");
    assert_eq!(
        alarm["Dimensions"],
        serde_json::json!([{
            "Name": "QueueName",
            "Value": get_att("AccessEventsWebhookDeadLetterQueue", "QueueName"),
        }])
    );
    assert_eq!(alarm["Threshold"], 1);
    assert_eq!(
        alarm["AlarmActions"],
        serde_json::json!([{ "Ref": "AlarmTopic" }])
    );

    let outputs = &on.template["Outputs"];
    for output in [
        "AccessEventsWebhookSecretArn",
        "AccessEventsWebhookDeadLetterQueueUrl",
    ] {
        assert_eq!(
            outputs[output]["Condition"], "HasAccessEventsWebhook",
            "{output}"
        );
    }
    assert_eq!(
        outputs["AccessEventsWebhookSecretArn"]["Value"],
        serde_json::json!({ "Ref": "AccessEventsWebhookSecret" })
    );
}
