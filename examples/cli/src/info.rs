//! `kestrel info`: adapters, the chosen one, capabilities, limits, features.

use kestrel::{Context, ContextOptions, list_adapters};

/// Arguments of `kestrel info`.
#[derive(clap::Args)]
pub struct InfoArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs `kestrel info`.
pub fn run(args: &InfoArgs) -> Result<(), Box<dyn std::error::Error>> {
    let adapters = list_adapters(None);
    let ctx = Context::new(&ContextOptions::from_env())?;
    let chosen = ctx.adapter();
    if args.json {
        let v = serde_json::json!({
            "adapters": adapters,
            "chosen": chosen,
            "capabilities": ctx.caps(),
            "features": ctx.feature_names(),
            "limits": ctx.limits(),
            "pipeline_cache_file": ctx.pipelines().cache_file().map(|p| p.display().to_string()),
        });
        println!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    println!("Adapters:");
    for a in &adapters {
        let mark = if a.name == chosen.name && a.backend == chosen.backend { "*" } else { " " };
        println!(" {mark} {} — {} / {} / driver {} {}", a.name, a.backend, a.device_type, a.driver, a.driver_info);
    }
    println!("\nChosen: {} ({}, {})", chosen.name, chosen.backend, chosen.device_type);
    let c = ctx.caps();
    println!(
        "  f16: {}  subgroups: {} (size {}..{})  timestamps: {} (inside passes: {})  pipeline cache: {}",
        c.f16, c.subgroups, c.subgroup_min_size, c.subgroup_max_size, c.timestamp, c.timestamp_inside_passes, c.pipeline_cache
    );
    println!(
        "  max storage binding: {} MiB  max buffer: {} MiB  workgroup storage: {} KiB  invocations/workgroup: {}",
        c.max_storage_binding >> 20,
        c.max_buffer_size >> 20,
        c.max_workgroup_storage >> 10,
        c.max_invocations_per_workgroup
    );
    println!("  features: {}", ctx.feature_names().join(", "));
    if let Some(p) = ctx.pipelines().cache_file() {
        println!("  pipeline cache file: {}", p.display());
    }
    println!("\nChoose an adapter with KESTREL_ADAPTER=<name substring> and/or WGPU_BACKEND=vulkan|metal|dx12|gl.");
    Ok(())
}
