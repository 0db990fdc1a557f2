//! `hookline completions` and `hookline man`, generated from the one clap definition in
//! crates/config, so they list exactly the commands and flags the binary takes.

use clap::CommandFactory;
use hookline_config::{Cli, CompletionsArgs, ManArgs, Shell};

pub fn completions(args: CompletionsArgs) -> anyhow::Result<()> {
    use clap_complete::Shell as S;
    let shell = match args.shell {
        Shell::Bash => S::Bash,
        Shell::Zsh => S::Zsh,
        Shell::Fish => S::Fish,
        Shell::Elvish => S::Elvish,
        Shell::PowerShell => S::PowerShell,
    };
    // Into a buffer first: `generate` panics when its writer fails (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "hookline", &mut script);
    super::write_out(&String::from_utf8_lossy(&script));
    Ok(())
}

pub fn man(args: ManArgs) -> anyhow::Result<()> {
    let cmd = Cli::command();
    match args.dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut page)?;
            super::write_out(&String::from_utf8_lossy(&page));
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            clap_mangen::generate_to(cmd, &dir)?;
            outln!("hookline: man pages written to {}", dir.display());
        }
    }
    Ok(())
}
