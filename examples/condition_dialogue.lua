-- A seller and a buyer talk through a Condition: the seller puts an item on
-- the shelf and notifies; the buyer waits until there is one, buys it and
-- notifies back.  The shelf is a Semaphore counting the items on it (threads
-- share no Lua variables, so shared state lives in concur objects).
local concur = require "concur"

local function seller(cond, shelf, items)
  for i = 1, items do
    cond:with(function()
      print(("Seller: here is item %d"):format(i))
      shelf:release()               -- one more item on the shelf
      cond:notify()
      -- wait_for releases the lock while it waits, like wait
      cond:wait_for(function() return shelf:get_value() == 0 end)
    end)
  end
  print("Seller: sold out, closing the shop")
end

local function buyer(cond, shelf, items)
  for i = 1, items do
    cond:with(function()
      cond:wait_for(function() return shelf:get_value() > 0 end)
      shelf:acquire()               -- take it off the shelf
      print(("Buyer: I bought item %d"):format(i))
      cond:notify()
    end)
  end
  print("Buyer: that's all I needed")
end

local cond = concur.Condition()     -- with a new RLock
local shelf = concur.Semaphore(0)
local b = concur.Thread{target = buyer, args = {cond, shelf, 3}, name = "buyer"}
local s = concur.Thread{target = seller, args = {cond, shelf, 3}, name = "seller"}
b:start()
s:start()
b:join()
s:join()
print(cond)
