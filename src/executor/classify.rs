//! Pure: tells a passing failure (the server is unreachable, restarting,
//! overloaded, dropped the connection mid-stream, a lock timed out) from one
//! that needs a human (bad password, missing database, version mismatch)
//! by the text of a tool's stderr or a server's error message. The retry in
//! `engine::backup::run_backup` acts on the answer.

/// Texts that need a human even when a transient phrase appears with them
/// (e.g. "connection to server ... failed: FATAL: password authentication
/// failed").
const PERMANENT: &[&str] = &[
    "password authentication failed",
    "access denied",
    "authentication failed",
    "no password supplied",
    "does not exist",
    "permission denied",
    "no pg_hba.conf entry",
    "server version mismatch",
    "unknown database",
];

/// Phrases of lost, refused or restarting connections and lock timeouts, as
/// libpq, pg_dump, pgbouncer, the MariaDB/MySQL clients and OpenSSL word them.
const TRANSIENT: &[&str] = &[
    // refused / unreachable / not yet up
    "connection refused",
    "could not connect",
    "is the server running",
    "can't connect to",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "the database system is not accepting connections",
    "server shutdown in progress",
    "temporary failure in name resolution",
    "network is unreachable",
    "no route to host",
    "timeout expired",
    "connection timed out",
    // lost mid-stream (server crash, failover, restart, administrator kill)
    "server closed the connection unexpectedly",
    "connection to server was lost",
    "terminating connection due to administrator command",
    "terminating connection due to unexpected postmaster exit",
    "terminating connection due to conflict with recovery",
    "ssl syscall error",
    "ssl connection has been closed unexpectedly",
    "unexpected eof",
    "eof detected",
    "could not receive data from server",
    "could not send data to server",
    "no connection to the server",
    "server conn crashed",
    "lost connection to",
    "server has gone away",
    "connection was killed",
    "query execution was interrupted",
    "connection reset",
    "broken pipe",
    // overload and locks
    "too many clients",
    "too many connections",
    "remaining connection slots are reserved",
    "query_wait_timeout",
    "lock wait timeout",
    "lock timeout",
    "canceling statement due to lock timeout",
    "deadlock",
];

/// Whether a tool's or server's error text describes a passing condition
/// rather than one that needs a human.
pub(crate) fn is_transient_text(text: &str) -> bool {
    let lower = text.to_lowercase();
    !PERMANENT.iter().any(|p| lower.contains(p)) && TRANSIENT.iter().any(|p| lower.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::ExecError;

    /// A tool failure as `process::finish` builds it from the stderr tail.
    fn tool_failure(tool: &str, stderr: &str) -> ExecError {
        ExecError::Tool {
            tool: tool.into(),
            target: "test".into(),
            status: "exit status: 1".into(),
            transient: is_transient_text(stderr),
            stderr: stderr.into(),
        }
    }

    /// In the wording of pg_dump 15 / libpq and mariadb-dump 10.11 (server
    /// killed, backend terminated, connection dropped by a proxy or over
    /// TLS); tests/it/lost_connection.rs provokes the first kinds for real.
    const LOST: &[(&str, &str)] = &[
        (
            "pg_dump",
            "pg_dump: error: Dumping the contents of table \"big\" failed: PQgetCopyData() failed.\n\
             pg_dump: detail: Error message from server: SSL SYSCALL error: EOF detected\n\
             pg_dump: detail: Command was: COPY public.big (id, txt) TO stdout;",
        ),
        (
            "pg_dump",
            "pg_dump: error: Dumping the contents of table \"big\" failed: PQgetCopyData() failed.\n\
             pg_dump: detail: Error message from server: server closed the connection unexpectedly\n\
             \tThis probably means the server terminated abnormally\n\
             \tbefore or while processing the request.\n\
             pg_dump: detail: Command was: COPY public.big (id, txt) TO stdout;",
        ),
        (
            "pg_dump",
            "pg_dump: error: Dumping the contents of table \"big\" failed: PQgetCopyData() failed.\n\
             pg_dump: detail: Error message from server: FATAL:  terminating connection due to administrator command\n\
             pg_dump: detail: Command was: COPY public.big (id, txt) TO stdout;",
        ),
        (
            "pg_dump",
            "pg_dump: error: query failed: SSL connection has been closed unexpectedly\n\
             pg_dump: detail: Query was: LOCK TABLE public.big IN ACCESS SHARE MODE",
        ),
        (
            "pg_dump",
            "pg_dump: error: connection to server at \"127.0.0.1\", port 54329 failed: Connection refused\n\
             \tIs the server running on that host and accepting TCP/IP connections?",
        ),
        (
            "pg_dump",
            "pg_dump: error: connection to server on socket \"/var/run/postgresql/.s.PGSQL.5432\" failed: No such file or directory\n\
             \tIs the server running locally and accepting connections on that socket?",
        ),
        (
            "pg_dump",
            "pg_dump: error: connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  the database system is starting up",
        ),
        (
            "pg_dump",
            "pg_dump: error: connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  the database system is shutting down",
        ),
        (
            "pg_dump",
            "pg_dump: [archiver (db)] connection to database \"app\" failed: could not connect to server: Connection refused",
        ),
        (
            "pg_dump",
            "pg_dump: error: query failed: could not receive data from server: Connection reset by peer",
        ),
        (
            "pg_dump",
            "pg_dump: error: query failed: FATAL:  terminating connection due to conflict with recovery\n\
             DETAIL:  User query might have needed to see row versions that must be removed.",
        ),
        (
            "pg_dump",
            "pg_dump: error: connection to server at \"pgbouncer\" (10.0.0.7), port 6432 failed: ERROR:  server conn crashed?",
        ),
        (
            "mariadb-dump",
            "mariadb-dump: Error 2013: Lost connection to server during query when dumping table `big` at row: 48211",
        ),
        (
            "mysqldump",
            "mysqldump: Error 2013: Lost connection to MySQL server during query when dumping table `big` at row: 1022",
        ),
        (
            "mariadb-dump",
            "mariadb-dump: Got error: 2006: \"Server has gone away\" when using LOCK TABLES",
        ),
        (
            "mysqldump",
            "mysqldump: Couldn't execute 'SHOW FIELDS FROM `big`': MySQL server has gone away (2006)",
        ),
        (
            "mariadb-dump",
            "mariadb-dump: Got error: 2002: \"Can't connect to server on '127.0.0.1' (115)\" when trying to connect",
        ),
        (
            "mariadb-dump",
            "mariadb-dump: Couldn't execute 'SELECT /*!40001 SQL_NO_CACHE */ `id`, `txt` FROM `big`': Connection was killed (1927)",
        ),
        (
            "mariadb-dump",
            "mariadb-dump: Couldn't execute 'SHOW CREATE TABLE `big`': Query execution was interrupted (1317)",
        ),
        (
            "mariadb-dump",
            "mariadb-dump: Got error: 1053: \"Server shutdown in progress\" when selecting the database",
        ),
        (
            "mariadb-dump",
            "mariadb-dump: Got error: 1040: \"Too many connections\" when trying to connect",
        ),
    ];

    const NEEDS_A_HUMAN: &[(&str, &str)] = &[
        (
            "pg_dump",
            "pg_dump: error: connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  password authentication failed for user \"app\"",
        ),
        (
            "pg_dump",
            "pg_dump: error: connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  database \"gone\" does not exist",
        ),
        (
            "pg_dump",
            "pg_dump: error: connection to server at \"10.0.0.5\", port 5432 failed: FATAL:  no pg_hba.conf entry for host \"10.0.0.9\", user \"app\", database \"app\", no encryption",
        ),
        (
            "pg_dump",
            "pg_dump: error: query failed: ERROR:  permission denied for table secrets\n\
             pg_dump: detail: Query was: LOCK TABLE public.secrets IN ACCESS SHARE MODE",
        ),
        (
            "pg_dump",
            "pg_dump: error: aborting because of server version mismatch\n\
             pg_dump: detail: server version: 17.2; pg_dump version: 15.10",
        ),
        (
            "pg_dump",
            "pg_dump: error: query failed: ERROR:  syntax error at or near \"(\"",
        ),
        (
            "mariadb-dump",
            "mariadb-dump: Got error: 1045: \"Access denied for user 'root'@'localhost' (using password: YES)\" when trying to connect",
        ),
        (
            "mariadb-dump",
            "mariadb-dump: Got error: 1049: \"Unknown database 'gone'\" when selecting the database",
        ),
        (
            "mariadb-dump",
            "mariadb-dump: Couldn't execute 'SHOW FIELDS FROM `broken`': View 'shop.broken' references invalid table(s) or column(s) or function(s) or definer/invoker of view lack rights to use them (1356)",
        ),
        ("sh", "no space left on device"),
    ];

    #[test]
    fn a_connection_lost_refused_or_killed_mid_dump_is_retried() {
        for (tool, text) in LOST {
            let e = tool_failure(tool, text);
            assert!(e.is_transient(), "should be retried: {e}");
            assert_eq!(e.kind(), "tool-failed");
        }
    }

    #[test]
    fn failures_that_need_a_human_are_not_retried() {
        for (tool, text) in NEEDS_A_HUMAN {
            let e = tool_failure(tool, text);
            assert!(!e.is_transient(), "should not be retried: {e}");
        }
    }

    #[test]
    fn case_does_not_matter() {
        assert!(is_transient_text("LOST CONNECTION TO SERVER DURING QUERY"));
        assert!(!is_transient_text(
            "ACCESS DENIED; lost connection to server"
        ));
    }
}
