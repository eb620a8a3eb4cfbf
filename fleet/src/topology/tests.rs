//! Unit tests of the parent module.
#![allow(clippy::unwrap_used)]
use super::*;

#[test]
fn an_override_carries_every_key_of_the_tenant_policy_and_only_changes_the_bound() {
    let customer_ref = CustomerRef::parse("shop.eu:7-a").unwrap();
    let fleet = tenant_policy(DEFAULT_TENANT_QUEUE_MAX_BYTES);
    let single = tenant_override_policy(&customer_ref, 4096);
    let mut expected = fleet["definition"].clone();
    expected["max-length-bytes"] = json!(4096);
    assert_eq!(single["definition"], expected);
    for key in ["dead-letter-exchange", "delivery-limit", "overflow", "dead-letter-strategy"] {
        assert!(single["definition"].get(key).is_some(), "{key} missing");
    }
    assert_eq!(single["pattern"], json!(r"^wa\.tenant\.shop\.eu\:7\-a$"));
    assert!(single["priority"].as_u64() > fleet["priority"].as_u64());
    assert_eq!(tenant_override_name(&customer_ref), "wafleet-tenant-queues.shop.eu:7-a");
}

#[tokio::test]
async fn management_moves_to_the_next_node_when_one_refuses_connections() {
    let node = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::path("/api/overview"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(json!({"node": "up"})))
        .mount(&node)
        .await;
    // Port 1 on loopback refuses at once: a stopped node. Each client starts at a random
    // node, so both orders are taken over the rounds.
    let list = format!("http://g:g@127.0.0.1:1, http://g:g@{}", node.address());
    for _ in 0..8 {
        let management = Management::new(&list, "/").unwrap();
        let answer = management.get_json(&["overview"]).await.unwrap();
        assert_eq!(answer, Some(json!({"node": "up"})));
        // It stays on the node that answered.
        assert_eq!(management.current.load(Ordering::Relaxed), 1);
    }
    let down = Management::new("http://g:g@127.0.0.1:1,http://g:g@127.0.0.1:2", "/").unwrap();
    assert!(matches!(down.get_json(&["overview"]).await, Err(Error::Http(e)) if e.is_connect()));
    assert!(Management::new(" , ", "/").is_err());
}
