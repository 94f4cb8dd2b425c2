//! The SAM template, checked offline for what the code relies on: every route the API
//! documents is in the template with the right authorization (the user's JWT on
//! `/payment`, IAM on `/server`), the table streams new images, and the access-event
//! publisher reads that stream with a dead-letter queue and may publish to its bus only.

use serde_json::Value;

fn load(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("{}/../{name}", env!("CARGO_MANIFEST_DIR")))
        .expect("readable");
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("YAML");
    // CloudFormation's short tags (`!Ref`, `!Sub`...) become their values.
    serde_json::to_value(untag(yaml)).expect("JSON-compatible")
}

fn untag(value: serde_yaml_ng::Value) -> serde_yaml_ng::Value {
    use serde_yaml_ng::Value as Y;
    match value {
        Y::Tagged(tagged) => untag(tagged.value),
        Y::Sequence(items) => Y::Sequence(items.into_iter().map(untag).collect()),
        Y::Mapping(map) => Y::Mapping(map.into_iter().map(|(k, v)| (k, untag(v))).collect()),
        other => other,
    }
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
        for method in operations.as_object().expect("operations").keys() {
            let route = deployed
                .iter()
                .find(|(m, p, _)| m == method && p == path)
                .unwrap_or_else(|| panic!("{method} {path} is documented but not deployed"));
            let expected = if path.starts_with("/server/") {
                "AWS_IAM"
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
