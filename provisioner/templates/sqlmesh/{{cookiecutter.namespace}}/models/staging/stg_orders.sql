MODEL (
  name staging.stg_orders,
  kind FULL,
  grain order_id,
  description 'Orders as they arrive in s3://<bucket>/<namespace>/raw/orders.csv, typed and cleaned.',
  audits (
    not_null(columns := (order_id, customer, order_date, amount)),
    unique_values(columns := (order_id))
  )
);

/* Raw files live under this product's own prefix; @raw_prefix comes from config.py (.env). */
SELECT
  CAST(order_id AS INTEGER) AS order_id,
  LOWER(TRIM(customer)) AS customer,
  CAST(order_date AS DATE) AS order_date,
  CAST(amount AS DECIMAL(12, 2)) AS amount
FROM READ_CSV(@raw_prefix || '/orders.csv', header := TRUE, all_varchar := TRUE)
