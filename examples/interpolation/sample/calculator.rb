class Calculator
  attr_reader :memory

  def initialize
    @memory = 0
  end

  def add(number)
    @memory += number
  end

  def subtract(number)
    @memory -= number
  end

  def divide(number)
    raise "Division by zero!" if number.zero?
    @memory /= number
  end

  def clear
    @memory = 0
  end
end
