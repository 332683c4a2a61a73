-- Tokenization tenant `demo`: a producer's operational database holding PII.
-- Mounted into tenant-db's /docker-entrypoint-initdb.d, so it runs once, when the data volume is empty,
-- as the superuser in database `tenant`. psql runs it, hence \getenv (psql 15+) for the role password:
-- the password comes from TENANT_TOKENIZER_PASSWORD in demo/.env and is never written to this file.

\set ON_ERROR_STOP on
\getenv tokenizer_password TENANT_TOKENIZER_PASSWORD

CREATE TABLE public.customers (
    id          integer PRIMARY KEY,
    full_name   text        NOT NULL,
    email       text        NOT NULL,
    phone       text        NOT NULL,
    country     text        NOT NULL,
    signed_up   date        NOT NULL
);

-- 500 deterministic, clearly fictitious customers (example.com addresses, +32 470 phone range).
INSERT INTO public.customers (id, full_name, email, phone, country, signed_up)
SELECT n,
       (ARRAY['Ada', 'Grace', 'Linus', 'Margaret', 'Alan', 'Barbara', 'Dennis', 'Frances'])[1 + n % 8]
         || ' ' || (ARRAY['Lovelace', 'Hopper', 'Torvalds', 'Hamilton', 'Turing', 'Liskov', 'Ritchie', 'Allen'])[1 + (n / 8) % 8],
       format('customer%s@example.com', lpad(n::text, 4, '0')),
       format('+32 470 %s %s %s', lpad((n / 10000)::text, 2, '0'), lpad(((n / 100) % 100)::text, 2, '0'), lpad((n % 100)::text, 2, '0')),
       (ARRAY['BE', 'NL', 'FR', 'DE', 'LU'])[1 + n % 5],
       DATE '2024-01-01' + (n % 600)
FROM generate_series(1, 500) AS n;

-- The role the provisioner connects as (PROVISIONER_TENANT_DEMO_DSN). It may read and rewrite the PII
-- columns of this one table and nothing else: UPDATE (which also allows the LOCK TABLE ... IN SHARE ROW
-- EXCLUSIVE MODE the engine takes), SELECT to read the values it hashes. No DELETE, INSERT or DDL.
CREATE ROLE tokenizer LOGIN PASSWORD :'tokenizer_password';
GRANT CONNECT ON DATABASE :"DBNAME" TO tokenizer;
GRANT USAGE ON SCHEMA public TO tokenizer;
GRANT SELECT, UPDATE ON public.customers TO tokenizer;

-- A read-only role for the walk-through's "see the tokenized data" step (psql inside the container).
CREATE ROLE analyst NOLOGIN;
GRANT USAGE ON SCHEMA public TO analyst;
GRANT SELECT ON public.customers TO analyst;
