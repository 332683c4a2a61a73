AUDIT (
  name assert_positive
);

/* Fails when any row has a zero or negative value in @column. */
SELECT *
FROM @this_model
WHERE @column <= 0
