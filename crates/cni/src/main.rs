use std::{io::Read, process::ExitCode};

fn main() -> ExitCode {
    let mut input = Vec::new();
    let read = std::io::stdin().read_to_end(&mut input);
    let outcome = match read {
        Ok(_) => weft_cni::run(|k| std::env::var(k).ok(), &input),
        Err(e) => Err(weft_cni::error::CniError::new(
            weft_cni::error::code::IO,
            "cannot read the network configuration from stdin",
            e.to_string(),
        )),
    };
    match outcome {
        Ok(Some(v)) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            // libcni reads the error object from stdout.
            println!("{}", e.to_json());
            eprintln!("weft-cni: {}: {}", e.msg, e.details);
            ExitCode::FAILURE
        }
    }
}
