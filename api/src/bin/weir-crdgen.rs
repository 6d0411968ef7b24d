//! Prints the StreamJob CustomResourceDefinition as YAML; its output is
//! committed as `crds/streamjob.yaml`.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let yaml = match weir_api::crd::crd_yaml() {
        Ok(yaml) => yaml,
        Err(e) => {
            eprintln!("weir-crdgen: cannot serialize the CRD: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(yaml.as_bytes()).and_then(|()| out.flush()) {
        eprintln!("weir-crdgen: cannot write the CRD: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
