-- The billing ledger lives in its own database on the same server as Flowise's (run once, on first start).
CREATE DATABASE billing;
