use wafleet_fleet::bridge_client::BridgeClient;

async fn send(client: &BridgeClient) {
    let _ = client.send_text("bridge-of-b", "15550001", "hello").await;
    let key = String::from("bridge-of-b");
    let _ = client.send_text(&key, "15550001", "hello").await;
}

fn main() {
    let _ = send;
}
