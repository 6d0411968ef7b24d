//! The Weir operator's entry point. The reconciler (observe → decide → apply → status) is the
//! operator milestone's work; until then this binary only reports which resource it will serve,
//! so that the workspace, image and chart layout are settled early.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "weir-operator: the {} {} reconciler is not part of this release yet; \
         run StreamJobs embedded with `weir run <manifest>`",
        weir_api::API_VERSION,
        weir_api::KIND
    );
    ExitCode::from(2)
}
