-- common/pass: a stage that does nothing and hands its input on.
return {
  description = "Pass the previous stage's output through unchanged",
  run = function(ctx, input)
    return input or {}
  end,
}
