//! `safepoint audit verify|export`: the audit hash chain checked, or the
//! log exported as JSON lines or CSV.

use super::shared::{print_json, window_start};
use crate::cli::{AuditCommand, ExportFormat, Output};
use crate::engine::context::Context;

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub(super) async fn audit(
    ctx: &Context,
    command: AuditCommand,
    output: Output,
) -> anyhow::Result<u8> {
    match command {
        AuditCommand::Verify => {
            let entries = ctx.catalog.audit_entries(None).await?;
            let head = ctx.catalog.audit_head();
            let verdict =
                crate::audit::verify(&entries, head.as_ref().map(|(s, h)| (*s, h.as_str())));
            if output == Output::Json {
                print_json(&verdict)?;
            } else if let Some(p) = &verdict.problem {
                outln!("audit log TAMPERED at entry {}: {}", p.seq, p.what);
            } else {
                outln!(
                    "audit log intact: {} entries, chain verified",
                    verdict.entries
                );
            }
            Ok(if verdict.ok { 0 } else { 1 })
        }
        AuditCommand::Export { since, format } => {
            let since = since.as_deref().map(window_start).transpose()?;
            let entries = ctx.catalog.audit_entries(since).await?;
            match format {
                ExportFormat::Jsonl => {
                    for e in &entries {
                        outln!("{}", serde_json::to_string(e)?);
                    }
                }
                ExportFormat::Csv => {
                    outln!("seq,at,kind,policy,actor,message,prev_hash,hash");
                    for e in &entries {
                        outln!(
                            "{},{},{},{},{},{},{},{}",
                            e.seq,
                            e.at.to_rfc3339(),
                            csv_field(&e.kind),
                            csv_field(e.policy.as_deref().unwrap_or("")),
                            csv_field(&e.actor),
                            csv_field(&e.message),
                            e.prev_hash,
                            e.hash
                        );
                    }
                }
            }
            Ok(0)
        }
    }
}
