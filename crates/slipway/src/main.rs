mod netns;

fn main() {}
