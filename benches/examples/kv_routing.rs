//! Runs the KV-routing scenario at the sizes given on the command line (default 10 100 1000)
//! and prints the markdown tables; `--json` prints the reports as JSON lines instead.

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let mut sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    if sizes.is_empty() {
        sizes = vec![10, 100, 1000];
    }
    for n in sizes {
        let report = agentos_benches::kv_routing::run(n)?;
        if json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            println!("{}", agentos_benches::kv_routing::render_markdown(&report));
        }
    }
    Ok(())
}
