# TODO: greet in more languages
class Greeter
  def greet(name) = "hello, #{name}"
end
