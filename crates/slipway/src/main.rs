#[allow(dead_code)]
mod dns_forwarder;

fn main() {}
