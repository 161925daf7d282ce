mod link;
mod netns;

fn main() {}
