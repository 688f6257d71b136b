// pgjdbc through the proxy, as agent:reporting and agent:etl of the reference scenario, in
// each of the driver's query modes: masking, refusals (SQLSTATE, the connection goes on),
// server-prepared statements, fetch-size portals, metadata queries, the row limit, and
// batches with a refused statement (atomic in the extended protocol, as in PostgreSQL).
//
//   PGWARDEN_STACK=stack.json java -cp postgresql.jar PgjdbcClient.java
//
// Prints {"passed": [...], "failed": [...]} and exits 1 when a check failed.

import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.BatchUpdateException;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Properties;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

public class PgjdbcClient {
    static final Pattern MASKED_EMAIL = Pattern.compile("[a-z]\\*\\*\\*@example\\.(com|org|net)");
    static final Pattern MASKED_PHONE = Pattern.compile("\\*+\\d{4}");
    static final List<String> passed = new ArrayList<>();
    static final List<String> failed = new ArrayList<>();
    static String stack;

    interface Body { void run() throws Exception; }

    static void check(String name, Body body) {
        try { body.run(); passed.add(name); }
        catch (Throwable t) { failed.add(name + ": " + t); }
    }

    static void expect(boolean condition, String what) {
        if (!condition) throw new AssertionError(what);
    }

    /** The SQLException ``body`` must fail with: ``state`` and a message matching ``reason``. */
    static SQLException refused(Body body, String state, String reason) throws Exception {
        try { body.run(); } catch (SQLException e) {
            expect(state.equals(e.getSQLState()), "SQLSTATE " + e.getSQLState() + ": " + e.getMessage());
            expect(Pattern.compile(reason).matcher(e.getMessage()).find(), "message: " + e.getMessage());
            return e;
        }
        throw new AssertionError("expected SQLSTATE " + state + ", the statement ran");
    }

    static String field(String name) {  // a string field of stack.json (flat enough for a regex)
        Matcher m = Pattern.compile("\"" + Pattern.quote(name) + "\"\\s*:\\s*(\"([^\"]*)\"|(\\d+))").matcher(stack);
        expect(m.find(), "stack file has no " + name);
        return m.group(2) != null ? m.group(2) : m.group(3);
    }

    static Connection connect(String identity, String mode) throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", identity);
        p.setProperty("password", field(identity));
        p.setProperty("sslmode", "verify-full");
        p.setProperty("sslrootcert", field("ca_file"));
        p.setProperty("ApplicationName", "pgjdbc");
        String url = "jdbc:postgresql://" + field("host") + ":" + field("port") + "/shop" + mode;
        return DriverManager.getConnection(url, p);
    }

    static int count(Connection c, String sql) throws SQLException {
        try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery(sql)) { rs.next(); return rs.getInt(1); }
    }

    static void reporting(String mode) throws Exception {
        try (Connection c = connect("agent:reporting", mode)) {
            check(mode + " statement: a read is masked", () -> {
                try (Statement s = c.createStatement();
                     ResultSet rs = s.executeQuery("SELECT id, email, phone FROM customers WHERE id = 42 LIMIT 1")) {
                    expect(rs.next(), "one row");
                    expect(rs.getInt(1) == 42, "id 42");
                    expect(MASKED_EMAIL.matcher(rs.getString(2)).matches(), "masked email: " + rs.getString(2));
                    expect(MASKED_PHONE.matcher(rs.getString(3)).matches(), "masked phone: " + rs.getString(3));
                    expect(!rs.next(), "one row only");
                }
            });
            check(mode + " prepared statement, 8 executions (server-prepared after 5)", () -> {
                try (PreparedStatement ps = c.prepareStatement("SELECT id, email FROM customers WHERE id = ? LIMIT 1")) {
                    for (int id = 1; id <= 8; id++) {
                        ps.setInt(1, id);
                        try (ResultSet rs = ps.executeQuery()) {
                            expect(rs.next() && rs.getInt(1) == id, "row " + id);
                            expect(MASKED_EMAIL.matcher(rs.getString(2)).matches(), "masked: " + rs.getString(2));
                        }
                    }
                }
            });
            check(mode + " a secret column is refused, the connection goes on", () -> {
                SQLException e = refused(() -> {
                    try (PreparedStatement ps = c.prepareStatement("SELECT ssn FROM customers WHERE id = ? LIMIT 1")) {
                        ps.setInt(1, 1);
                        ps.executeQuery().close();
                    }
                }, "42501", "public\\.customers\\.ssn");
                expect(e.getMessage().contains("decision_id="), "decision id in the detail: " + e.getMessage());
                expect(count(c, "SELECT count(*) FROM orders") == 5000, "orders counted");
            });
            check(mode + " fetch size 7 in a transaction", () -> {
                c.setAutoCommit(false);
                int rows = 0;
                try (PreparedStatement ps = c.prepareStatement("SELECT id, email FROM customers WHERE id < 100 ORDER BY id LIMIT 30")) {
                    ps.setFetchSize(7);
                    try (ResultSet rs = ps.executeQuery()) {
                        while (rs.next()) {
                            rows++;
                            expect(rs.getInt(1) == rows, "in order");
                            expect(MASKED_EMAIL.matcher(rs.getString(2)).matches(), "masked");
                        }
                    }
                }
                c.commit();
                c.setAutoCommit(true);
                expect(rows == 30, rows + " rows");
            });
            check(mode + " a refusal aborts the transaction like an error", () -> {
                c.setAutoCommit(false);
                refused(() -> count(c, "SELECT count(card_number) FROM payments"), "42501", "card_number");
                refused(() -> count(c, "SELECT 1"), "25P02", "current transaction is aborted");
                c.rollback();
                c.setAutoCommit(true);
                expect(count(c, "SELECT 7") == 7, "usable after the rollback");
            });
            check(mode + " multi-statement execute", () -> {
                List<Integer> seen = new ArrayList<>();
                try (Statement s = c.createStatement()) {
                    boolean isResult = s.execute("SELECT 1; SELECT 2");
                    while (isResult || s.getUpdateCount() != -1) {
                        if (isResult) try (ResultSet rs = s.getResultSet()) { rs.next(); seen.add(rs.getInt(1)); }
                        isResult = s.getMoreResults();
                    }
                }
                expect(seen.equals(List.of(1, 2)), "results " + seen);
            });
            check(mode + " DatabaseMetaData.getTables", () -> {
                List<String> tables = new ArrayList<>();
                try (ResultSet rs = c.getMetaData().getTables(null, "public", "%", new String[] {"TABLE"})) {
                    while (rs.next()) tables.add(rs.getString("TABLE_NAME"));
                }
                expect(tables.containsAll(List.of("customers", "orders", "payments")), "tables " + tables);
            });
            check(mode + " the row limit is an error, the connection goes on", () -> {
                refused(() -> {
                    try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("SELECT id FROM orders")) {
                        while (rs.next()) { }
                    }
                }, "54000", "row limit of 1000 rows");
                expect(count(c, "SELECT 8") == 8, "usable");
            });
        }
    }

    static final String[] BATCH = {
        "INSERT INTO orders (id, customer_id, total, status) VALUES (900201, 1, 1, 'new')",
        "INSERT INTO orders (id, customer_id, total, status) VALUES (900202, 1, 1, 'new')",
        "DELETE FROM payments WHERE id = 1",  // refused: etl may not write payments
        "INSERT INTO orders (id, customer_id, total, status) VALUES (900203, 1, 1, 'new')",
    };

    static void etl(String mode, boolean simple) throws Exception {
        try (Connection c = connect("agent:etl", mode)) {
            check(mode + " a batch insert runs", () -> {
                c.setAutoCommit(false);
                int[] counts;
                try (PreparedStatement ps = c.prepareStatement("INSERT INTO orders (id, customer_id, total, status) VALUES (?, ?, ?, ?)")) {
                    for (int i = 0; i < 20; i++) {
                        ps.setInt(1, 900100 + i);
                        ps.setInt(2, 1 + i);
                        ps.setBigDecimal(3, new java.math.BigDecimal("9.50"));
                        ps.setString(4, "new");
                        ps.addBatch();
                    }
                    counts = ps.executeBatch();
                }
                expect(counts.length == 20, counts.length + " counts");
                expect(count(c, "SELECT count(*) FROM orders WHERE id BETWEEN 900100 AND 900119") == 20, "20 rows in the transaction");
                c.rollback();
                c.setAutoCommit(true);
                expect(count(c, "SELECT count(*) FROM orders WHERE id BETWEEN 900100 AND 900119") == 0, "rolled back");
            });
            check(mode + " a batch with a refused statement", () -> {
                c.setAutoCommit(true);
                int[] counts = null;
                try (Statement s = c.createStatement()) {
                    for (String sql : BATCH) s.addBatch(sql);
                    s.executeBatch();
                    throw new AssertionError("the batch ran whole");
                } catch (BatchUpdateException e) {
                    expect("42501".equals(e.getSQLState()), "SQLSTATE " + e.getSQLState());
                    counts = e.getUpdateCounts();
                }
                int kept = count(c, "SELECT count(*) FROM orders WHERE id BETWEEN 900201 AND 900203");
                try (Statement s = c.createStatement()) { s.executeUpdate("DELETE FROM orders WHERE id BETWEEN 900201 AND 900203"); }
                // What PostgreSQL does with an error in the batch (measured directly): the
                // extended protocol sends it as one implicit transaction, all rolled back; in
                // the simple modes (for a Statement, extendedForPrepared is one) each
                // statement is a query of its own.
                int[] expected = simple ? new int[] {1, 1, Statement.EXECUTE_FAILED, 1}
                                        : new int[] {-3, -3, -3, -3};
                expect(Arrays.equals(counts, expected), "counts " + Arrays.toString(counts));
                expect(kept == (simple ? 3 : 0), kept + " rows kept");
            });
        }
    }

    static String json(List<String> items) {
        StringBuilder sb = new StringBuilder("[");
        for (String item : items) {
            if (sb.length() > 1) sb.append(',');
            sb.append('"').append(item.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")).append('"');
        }
        return sb.append(']').toString();
    }

    public static void main(String[] args) throws Exception {
        stack = Files.readString(Path.of(System.getenv("PGWARDEN_STACK")));
        String[] modes = {"", "?preferQueryMode=extendedForPrepared", "?prepareThreshold=1",
                          "?prepareThreshold=-1", "?preferQueryMode=simple"};
        try {
            for (String mode : modes) {
                reporting(mode);
                etl(mode, mode.contains("preferQueryMode"));
            }
        } catch (Throwable t) {
            failed.add("the program broke off: " + t);
        }
        System.out.println("{\"passed\": " + json(passed) + ", \"failed\": " + json(failed) + "}");
        System.exit(failed.isEmpty() ? 0 : 1);
    }
}
