-- The test database: a few orders, readable by the job's role (reporter, made by start.sh) and nothing more.
CREATE TABLE orders (
    id       serial PRIMARY KEY,
    customer text NOT NULL,
    amount   numeric(10, 2) NOT NULL,
    placed   date NOT NULL
);
INSERT INTO orders (customer, amount, placed) VALUES
    ('ada',   20.00, '2026-11-02'),
    ('grace', 99.90, '2026-11-03'),
    ('ada',   30.50, '2026-11-05'),
    ('linus',  5.25, '2026-11-07'),
    ('ada',   10.00, '2026-11-09');
GRANT SELECT ON orders TO reporter;
