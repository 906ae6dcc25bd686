use std::process::ExitCode;

fn main() -> ExitCode {
    let outcome = weft_cni::config::read(std::io::stdin().lock())
        .and_then(|input| weft_cni::run(|k| std::env::var(k).ok(), &input));
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
