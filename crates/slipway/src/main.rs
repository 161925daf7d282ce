mod link;

fn main() {}
