"""Pure maths: functions of numbers, arrays and tensors only. No files, no models."""
